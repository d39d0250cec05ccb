package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image/tarx"
	"github.com/berthhq/berth/internal/store"
)

// Source types recorded in api.Image.SourceType.
const (
	SourceTar         = "tar"
	SourceDir         = "dir"
	SourceOCI         = "oci"
	SourceDebootstrap = "debootstrap"
)

// work is a temporary directory for one image being made; commit moves its
// rootfs into place.
type work struct {
	s    *Store
	name string
	dir  string // DATA/images/.tmp-NAME-XXXX
}

func (w *work) rootfs() string { return filepath.Join(w.dir, "rootfs") }

// begin validates name, reserves it and creates the work directory. The
// returned cleanup releases the reservation and removes the work dir
// (after a commit there is nothing left to remove).
func (s *Store) begin(ctx context.Context, name string) (*work, func(), error) {
	if err := s.CheckNew(ctx, name); err != nil {
		return nil, nil, err
	}
	release, err := s.reserve(name)
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp(s.dir, tmpPrefix+name+"-")
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("image %q: create work dir: %w", name, err)
	}
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		release()
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("image %q: %w", name, err)
	}
	w := &work{s: s, name: name, dir: dir}
	return w, func() {
		if err := removeTree(dir); err != nil {
			s.log.Warn("remove image work dir", "dir", dir, "err", err)
		}
		release()
	}, nil
}

// commit scans the finished root, moves the work dir into place and
// records the image: the record is the commit point.
func (w *work) commit(ctx context.Context, img api.Image, log Logger) (api.Image, error) {
	t0 := time.Now()
	sc, err := Scan(w.rootfs())
	if err != nil {
		return api.Image{}, err
	}
	log.Printf("scanned %d entries (digest, size, OS) in %v", sc.Files, time.Since(t0).Round(time.Millisecond))
	img.Name = w.name
	img.Size, img.Files, img.Digest = sc.Size, sc.Files, sc.Digest
	img.Architecture, img.OSRelease = sc.Architecture, sc.OSRelease
	img.Kernel, img.Initrd = sc.Kernel, sc.Initrd
	if img.Created == 0 {
		img.Created = time.Now().Unix()
	}
	img.Formats = []string{api.ImageFormatRootFS}
	img.Paths = nil
	final := filepath.Join(w.s.dir, w.name)
	// Every file of the root must be on disk before the record says the
	// image exists: one syncfs flushes them all.
	t0 = time.Now()
	if err := syncFS(w.dir); err != nil {
		return api.Image{}, err
	}
	log.Printf("flushed to disk in %v", time.Since(t0).Round(time.Millisecond))
	if err := os.Rename(w.dir, final); err != nil {
		return api.Image{}, fmt.Errorf("image %q: move into place: %w", w.name, err)
	}
	if err := syncDir(w.s.dir); err != nil {
		return api.Image{}, err
	}
	if _, err := store.PutJSON(ctx, w.s.st, w.s.key(w.name), record{img}, store.Cond{Create: true}); err != nil {
		// Without a record the directory would be removed at the next
		// start anyway; remove it now.
		_ = removeTree(final)
		return api.Image{}, fmt.Errorf("image %q: record: %w", w.name, err)
	}
	w.s.log.Info("image added", "image", w.name, "source", img.Source, "files", img.Files, "size", img.Size)
	log.Printf("image %s: %d files, %s, digest %s", w.name, img.Files, humanBytes(img.Size), img.Digest)
	return w.s.fill(img), nil
}

// syncFS flushes all dirty data of the file system holding dir.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// syncDir flushes a directory's entries (a rename) to disk.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Import adds an image from source, an absolute path on this node: a root
// file system tarball (plain, gzip, xz or zstd, detected from content), a
// directory (copied with owners, modes, links, devices and xattrs), or an
// OCI image archive (layers applied in order, whiteouts honoured). A failed
// import leaves nothing behind.
func (s *Store) Import(ctx context.Context, name, source string, log Logger) (api.Image, error) {
	fi, err := checkSource(source)
	if err != nil {
		return api.Image{}, err
	}
	w, done, err := s.begin(ctx, name)
	if err != nil {
		return api.Image{}, err
	}
	defer done()
	img := api.Image{Source: source}
	switch {
	case fi.IsDir():
		img.SourceType = SourceDir
		log.Printf("copying directory %s", source)
		err = copyDir(ctx, source, w.rootfs())
	case fi.Mode().IsRegular():
		var oci bool
		oci, err = isOCIArchive(source)
		if err != nil {
			break
		}
		if oci {
			img.SourceType = SourceOCI
			log.Printf("importing OCI image archive %s", source)
			err = w.importOCI(ctx, source, log)
		} else {
			img.SourceType = SourceTar
			err = w.importTar(ctx, source, log)
		}
	default:
		err = invalid("source", fmt.Sprintf("%s is neither a regular file nor a directory", source))
	}
	if err != nil {
		return api.Image{}, fmt.Errorf("import %s: %w", source, err)
	}
	return w.commit(ctx, img, log)
}

// checkSource validates an import source path.
func checkSource(source string) (os.FileInfo, error) {
	if !filepath.IsAbs(source) {
		return nil, invalid("source", fmt.Sprintf("%q is not an absolute path on the node: give the full path of a tarball, directory or OCI archive", source))
	}
	fi, err := os.Stat(source)
	if err != nil {
		return nil, invalid("source", fmt.Sprintf("%v: give a tarball, a directory or an OCI archive on the node", err))
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		return nil, invalid("source", fmt.Sprintf("%s is neither a regular file nor a directory", source))
	}
	return fi, nil
}

// CheckImport validates an import request without starting it: the name
// is valid and free, the source exists.
func (s *Store) CheckImport(ctx context.Context, name, source string) error {
	if err := s.CheckNew(ctx, name); err != nil {
		return err
	}
	_, err := checkSource(source)
	return err
}

func (w *work) importTar(ctx context.Context, source string, log Logger) error {
	f, err := os.Open(source)
	if err != nil {
		return err
	}
	defer f.Close()
	r, kind, err := Decompress(ctx, f)
	if err != nil {
		return err
	}
	defer r.Close()
	log.Printf("extracting %s tarball %s", kind, source)
	t0 := time.Now()
	st, err := tarx.Extract(ctx, r, w.rootfs(), tarx.Options{Owners: true})
	if err != nil {
		return fmt.Errorf("%s tarball: %w", kind, err)
	}
	if err := r.Close(); err != nil {
		return fmt.Errorf("%s tarball: %w", kind, err)
	}
	log.Printf("extracted %d entries in %v", st.Entries, time.Since(t0).Round(time.Millisecond))
	if st.Skipped > 0 {
		log.Printf("warning: %d owners, xattrs or device nodes not restored (not running as root)", st.Skipped)
	}
	return nil
}

// copyDir copies a tree with cp -a (owners, modes, hard links, devices,
// xattrs; symlinks copied, never followed). Reflinks are used where the
// file system has them.
func copyDir(ctx context.Context, src, dst string) error {
	cmd := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", "--", src+"/.", dst+"/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Compression names returned by Decompress.
const (
	CompressNone = "plain"
	CompressGzip = "gzip"
	CompressXz   = "xz"
	CompressZstd = "zstd"
	CompressBz2  = "bzip2"
)

// Sniff names the compression of a stream from its first bytes.
func Sniff(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return CompressGzip
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return CompressXz
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return CompressZstd
	case bytes.HasPrefix(head, []byte("BZh")):
		return CompressBz2
	}
	return CompressNone
}

// Decompress returns a reader of r's content with its compression (gzip,
// xz, zstd, bzip2 or none, detected from the content) removed. gzip is
// decoded in process; xz, zstd and bzip2 by the xz, zstd and bzip2 tools.
// Close reports a failure of the tool.
func Decompress(ctx context.Context, r io.Reader) (io.ReadCloser, string, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, _ := br.Peek(8)
	kind := Sniff(head)
	switch kind {
	case CompressNone:
		return io.NopCloser(br), kind, nil
	case CompressGzip:
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, kind, fmt.Errorf("gzip: %w", err)
		}
		return z, kind, nil
	}
	tool := map[string]string{CompressXz: "xz", CompressZstd: "zstd", CompressBz2: "bzip2"}[kind]
	cmd := exec.CommandContext(ctx, tool, "-dc")
	cmd.Stdin = br
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, kind, err
	}
	if err := cmd.Start(); err != nil {
		return nil, kind, fmt.Errorf("%s: %w (install the %s package)", tool, err, tool)
	}
	return &toolReader{ReadCloser: out, cmd: cmd, stderr: &stderr, tool: tool}, kind, nil
}

type toolReader struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	tool   string
	done   bool
	err    error
}

func (t *toolReader) Close() error {
	if t.done {
		return t.err
	}
	t.done = true
	// Drain so the tool can finish, then reap it.
	_, _ = io.Copy(io.Discard, t.ReadCloser)
	if err := t.cmd.Wait(); err != nil {
		t.err = fmt.Errorf("%s -d: %w: %s", t.tool, err, strings.TrimSpace(t.stderr.String()))
	}
	return t.err
}

// isOCIArchive reports whether path is a plain tar holding an OCI image
// layout (oci-layout and index.json at its top).
func isOCIArchive(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	if Sniff(head[:n]) != CompressNone || n < 512 || !bytes.Equal(head[257:262], []byte("ustar")) {
		return false, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	tr := tar.NewReader(f) // skips file bodies by seeking
	var layout, index bool
	for i := 0; ; i++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false, nil // not a tar we understand: let extraction say why
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "oci-layout":
			layout = true
		case "index.json":
			index = true
		}
		if layout && index {
			return true, nil
		}
	}
	return false, nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
