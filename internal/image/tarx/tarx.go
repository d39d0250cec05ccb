// Package tarx extracts tar streams into a directory safely: no entry can
// write outside the target root (".." entries are refused, absolute names
// are taken relative to the root, and every parent directory is resolved
// inside the root with openat2(RESOLVE_IN_ROOT), so symlinks in the tree can
// never lead a write out of it). As root it restores ownership, modes,
// extended attributes, device nodes, FIFOs and hard links; as another user it
// restores what it can and counts what it skipped. It optionally applies OCI
// layer whiteouts (".wh.NAME" and ".wh..wh..opq"). It does not decompress:
// callers hand it a plain tar stream.
package tarx

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// WhiteoutPrefix marks an OCI whiteout entry: ".wh.NAME" deletes NAME from
// the layers below.
const WhiteoutPrefix = ".wh."

// WhiteoutOpaque marks an opaque directory: the directory's entries from
// the layers below are hidden.
const WhiteoutOpaque = ".wh..wh..opq"

// Options control an extraction.
type Options struct {
	// Whiteouts applies OCI whiteout entries instead of writing them as
	// files. Use it when applying image layers in order.
	Whiteouts bool
	// Owners restores entry owners (needs root); when false, or when not
	// running as root, files belong to the extracting user and device
	// nodes are skipped.
	Owners bool
	// MaxFileSize refuses regular files larger than this many bytes
	// (sparse files count their full size); 0 means the space free on
	// the target file system when the file is created.
	MaxFileSize int64
}

// Stats counts what an extraction did.
type Stats struct {
	// Entries is the number of tar entries read.
	Entries int
	// Whiteouts is the number of whiteout entries applied.
	Whiteouts int
	// Skipped counts entries not restored for lack of privilege (device
	// nodes, ownership) when not running as root.
	Skipped int
}

// CleanName turns a tar entry name into a clean path relative to the
// extraction root, or refuses it. Leading slashes are dropped (as GNU tar
// does) and "./" prefixes removed; names with a ".." component, NUL bytes or
// nothing left are refused. The root itself is returned as ".".
func CleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("tar entry %q: name holds a NUL byte", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("tar entry %q: '..' would leave the image root", name)
		}
	}
	p := path.Clean("/" + name)
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return ".", nil
	}
	return p, nil
}

// WhiteoutKind says what an (already cleaned) entry name means under OCI
// layer rules.
type WhiteoutKind int

// Whiteout kinds.
const (
	// NotWhiteout is an ordinary entry.
	NotWhiteout WhiteoutKind = iota
	// Whiteout deletes the target from lower layers.
	Whiteout
	// Opaque hides the lower layers' entries of the target directory.
	Opaque
)

// ParseWhiteout classifies a cleaned entry name. For Whiteout the target is
// the path to delete; for Opaque it is the directory to empty. A whiteout
// whose target would be ".", ".." or empty is refused.
func ParseWhiteout(name string) (WhiteoutKind, string, error) {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if base == WhiteoutOpaque {
		return Opaque, dir, nil
	}
	if !strings.HasPrefix(base, WhiteoutPrefix) {
		return NotWhiteout, "", nil
	}
	t := strings.TrimPrefix(base, WhiteoutPrefix)
	if t == "" || t == "." || t == ".." {
		return NotWhiteout, "", fmt.Errorf("whiteout %q names no file", name)
	}
	return Whiteout, path.Join(dir, t), nil
}

type dirTime struct {
	rel string
	hdr *tar.Header
}

// Extract reads the tar stream r and writes its entries under root, which
// must exist. It stops at the first error; the caller owns cleaning up a
// partial tree (berth always extracts into a fresh temporary directory).
func Extract(ctx context.Context, r io.Reader, root string, o Options) (Stats, error) {
	var st Stats
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, fmt.Errorf("open extraction root %s: %w", root, err)
	}
	defer unix.Close(rootFD)
	x := &extractor{root: root, rootFD: rootFD, o: o, st: &st, asRoot: os.Geteuid() == 0,
		layer: map[string]bool{}}
	if !x.asRoot {
		x.o.Owners = false
	}
	defer x.dropCache()
	tr := tar.NewReader(r)
	var dirs []dirTime
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read tar: %w", err)
		}
		st.Entries++
		rel, err := CleanName(hdr.Name)
		if err != nil {
			return st, err
		}
		if o.Whiteouts {
			kind, target, err := ParseWhiteout(rel)
			if err != nil {
				return st, err
			}
			if kind != NotWhiteout {
				if err := x.whiteout(kind, target); err != nil {
					return st, err
				}
				st.Whiteouts++
				continue
			}
		}
		if err := x.entry(hdr, rel, tr); err != nil {
			return st, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
		for p := rel; p != "." && p != "/" && !x.layer[p]; p = path.Dir(p) {
			x.layer[p] = true
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{rel, hdr})
		}
	}
	// Directory times last: writing their entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if pfd, base, err := x.parent(d.rel); err == nil {
			_ = setTimes(pfd, base, d.hdr)
			unix.Close(pfd)
		}
	}
	return st, nil
}

type extractor struct {
	root   string
	rootFD int
	o      Options
	st     *Stats
	asRoot bool
	// layer holds the paths written by this stream, which an opaque
	// whiteout in the same stream must not hide.
	layer map[string]bool
	buf   []byte
	// cacheDir/cacheFD remember the last parent directory opened; any
	// removal or new symlink drops it, since either may change what a
	// path resolves to.
	cacheDir string
	cacheFD  int
}

func (x *extractor) dropCache() {
	if x.cacheDir != "" {
		unix.Close(x.cacheFD)
		x.cacheDir = ""
	}
}

// parent opens the parent directory of rel, resolved inside the root, and
// returns it with rel's last component. Missing parents are created (mode
// 0755, as tar does).
func (x *extractor) parent(rel string) (int, string, error) {
	if rel == "." {
		fd, err := unix.Openat2(x.rootFD, ".", &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		return fd, ".", err
	}
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if x.cacheDir == dir {
		fd, err := unix.Dup(x.cacheFD)
		return fd, base, err
	}
	fd, err := x.openDir(dir)
	if errors.Is(err, unix.ENOENT) {
		if err := x.mkdirAll(dir); err != nil {
			return -1, "", err
		}
		fd, err = x.openDir(dir)
	}
	if err != nil {
		return -1, "", fmt.Errorf("open parent %s inside the root: %w", dir, err)
	}
	x.dropCache()
	if c, err := unix.Dup(fd); err == nil {
		x.cacheDir, x.cacheFD = dir, c
	}
	return fd, base, nil
}

func (x *extractor) openDir(dir string) (int, error) {
	return unix.Openat2(x.rootFD, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

func (x *extractor) mkdirAll(dir string) error {
	cur := "."
	for _, part := range strings.Split(dir, "/") {
		fd, err := x.openDir(cur)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(fd, part, 0o755)
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create directory %s: %w", path.Join(cur, part), err)
		}
		cur = path.Join(cur, part)
	}
	return nil
}

// procPath names base inside the open directory pfd for calls that take a
// path; the final component is never followed by the callers.
func procPath(pfd int, base string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base)
}

// removeExisting deletes whatever is at base unless it is a directory and
// keepDir is set. It reports whether a directory was kept.
func (x *extractor) removeExisting(pfd int, base string, keepDir bool) (bool, error) {
	var s unix.Stat_t
	if err := unix.Fstatat(pfd, base, &s, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	if s.Mode&unix.S_IFMT == unix.S_IFDIR {
		if keepDir {
			return true, nil
		}
		x.dropCache()
		return false, os.RemoveAll(procPath(pfd, base))
	}
	x.dropCache()
	return false, unix.Unlinkat(pfd, base, 0)
}

func (x *extractor) entry(hdr *tar.Header, rel string, r io.Reader) error {
	pfd, base, err := x.parent(rel)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	mode := uint32(hdr.Mode) & 0o7777
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return errors.New("the root must be a directory")
		}
		return x.meta(pfd, ".", hdr, mode, false)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		kept, err := x.removeExisting(pfd, base, true)
		if err != nil {
			return err
		}
		if !kept {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return fmt.Errorf("mkdir: %w", err)
			}
		}
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if _, err := x.removeExisting(pfd, base, false); err != nil {
			return err
		}
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		// Plain fd writes: an *os.File would register with the poller.
		err = x.copyFile(fd, r, hdr.Size)
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
	case tar.TypeSymlink:
		if _, err := x.removeExisting(pfd, base, false); err != nil {
			return err
		}
		x.dropCache()
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		return x.meta(pfd, base, hdr, mode, true)
	case tar.TypeLink:
		target, err := CleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		tfd, tbase, err := x.parent(target)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		defer unix.Close(tfd)
		if target == rel {
			return nil
		}
		if _, err := x.removeExisting(pfd, base, false); err != nil {
			return err
		}
		if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
			return fmt.Errorf("hard link to %s: %w", target, err)
		}
		return nil // a link shares its target's metadata
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		ft := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		if ft != unix.S_IFIFO && !x.asRoot {
			x.st.Skipped++
			return nil
		}
		if _, err := x.removeExisting(pfd, base, false); err != nil {
			return err
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(pfd, base, ft|0o600, int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	return x.meta(pfd, base, hdr, mode, false)
}

// meta restores owner, mode, xattrs and times of base in pfd.
func (x *extractor) meta(pfd int, base string, hdr *tar.Header, mode uint32, symlink bool) error {
	if x.o.Owners {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	} else if hdr.Uid != os.Geteuid() || hdr.Gid != os.Getegid() {
		x.st.Skipped++
	}
	if !symlink {
		// After chown, which clears set-id bits.
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if !x.asRoot && !strings.HasPrefix(name, "user.") {
			x.st.Skipped++
			continue
		}
		if err := unix.Lsetxattr(procPath(pfd, base), name, []byte(v), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	if hdr.Typeflag != tar.TypeDir {
		return setTimes(pfd, base, hdr)
	}
	return nil
}

func setTimes(pfd int, base string, hdr *tar.Header) error {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	return unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// whiteout applies a whiteout or opaque marker.
func (x *extractor) whiteout(kind WhiteoutKind, target string) error {
	if kind == Whiteout {
		dir, base := path.Split(target)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if base == "." || base == ".." {
			return fmt.Errorf("whiteout of %q names no file", target)
		}
		pfd, err := x.openDir(dir)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil // nothing below to hide
		}
		if err != nil {
			return fmt.Errorf("whiteout %s: %w", target, err)
		}
		defer unix.Close(pfd)
		if _, err := x.removeExisting(pfd, base, false); err != nil {
			return fmt.Errorf("whiteout %s: %w", target, err)
		}
		return nil
	}
	x.dropCache()
	fd, err := x.openDir(target)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opaque directory %s: %w", target, err)
	}
	defer unix.Close(fd)
	dir := procPath(fd, ".")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("opaque directory %s: %w", target, err)
	}
	for _, e := range ents {
		child := path.Join(target, e.Name())
		if target == "." {
			child = e.Name()
		}
		if x.layer[child] {
			continue // written by this layer: stays
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("opaque directory %s: %w", target, err)
		}
	}
	return nil
}

// copyFile writes a file's content, leaving holes where the content is
// zero blocks (sparse tar entries and zero-filled files stay sparse), after
// checking that the file fits on the file system.
func (x *extractor) copyFile(fd int, r io.Reader, size int64) error {
	if max := x.o.MaxFileSize; max > 0 && size > max {
		return fmt.Errorf("the entry is %d bytes, more than the limit of %d", size, max)
	}
	if x.o.MaxFileSize == 0 && size > 1<<30 {
		var fs unix.Statfs_t
		if err := unix.Fstatfs(fd, &fs); err == nil {
			if free := int64(fs.Bavail) * fs.Bsize; size > free {
				return fmt.Errorf("the entry is %d bytes, more than the %d bytes free on the image file system", size, free)
			}
		}
	}
	if x.buf == nil {
		x.buf = make([]byte, 128<<10)
	}
	buf := x.buf
	var off int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if isZero(buf[:n]) {
				off += int64(n)
			} else {
				for b := buf[:n]; len(b) > 0; {
					w, werr := unix.Pwrite(fd, b, off)
					if werr == unix.EINTR {
						continue
					}
					if werr != nil {
						return werr
					}
					b, off = b[w:], off+int64(w)
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	return unix.Ftruncate(fd, off)
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
