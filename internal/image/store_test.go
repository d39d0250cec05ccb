package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/store"
)

type env struct {
	st    *store.Bolt
	dir   string
	inUse map[string][]int
}

func newStore(t *testing.T) (*image.Store, *env) {
	t.Helper()
	e := &env{dir: filepath.Join(t.TempDir(), "images"), inUse: map[string][]int{}}
	var err error
	e.st, err = store.Open(filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	return e.open(t), e
}

func (e *env) open(t *testing.T) *image.Store {
	t.Helper()
	s, err := image.Open(context.Background(), e.st, e.dir, nil, image.WithInUse(func(ctx context.Context, name string) ([]int, error) {
		return e.inUse[name], nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBusyboxImportListGetRemove(t *testing.T) {
	s, e := newStore(t)
	ctx := context.Background()
	img := imagetest.Busybox(t, s, "busybox")
	if img.Name != "busybox" || img.SourceType != "tar" || img.Files < 100 || img.Size < 1<<20 {
		t.Errorf("image = %+v", img)
	}
	if img.Architecture != map[string]string{"amd64": "amd64", "arm64": "arm64"}[runtime.GOARCH] {
		t.Errorf("architecture = %q on %s", img.Architecture, runtime.GOARCH)
	}
	if img.OSRelease != "BusyBox (berth test image)" || !strings.HasPrefix(img.Digest, "sha256:") {
		t.Errorf("os release %q digest %q", img.OSRelease, img.Digest)
	}
	root, err := s.RootFS("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if root != filepath.Join(e.dir, "busybox", "rootfs") || img.Paths["rootfs"] != root {
		t.Errorf("rootfs %q, paths %v", root, img.Paths)
	}
	if l, err := os.Readlink(filepath.Join(root, "bin/sh")); err != nil || l != "/bin/busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp mode %v %v", fi.Mode(), err)
	}
	// The image runs: its busybox prints its applets.
	out, err := exec.Command(filepath.Join(root, "bin/busybox"), "echo", "hello").Output()
	if err != nil || string(out) != "hello\n" {
		t.Errorf("busybox in image: %q %v", out, err)
	}

	got, err := s.Get(ctx, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(img, got); diff != "" {
		t.Errorf("Get mismatch (-import +get):\n%s", diff)
	}
	// Same name again: 409 exists, nothing changes.
	if _, err := s.Import(ctx, "busybox", imagetest.BusyboxTar(t), imagetest.Logger{T: t}); !errors.Is(err, store.ErrExists) {
		t.Errorf("second import: %v, want ErrExists", err)
	}
	// A directory import of the same tree has the same digest.
	dimg, err := s.Import(ctx, "bb-dir", root, imagetest.Logger{T: t})
	if err != nil {
		t.Fatal(err)
	}
	if dimg.Digest != img.Digest || dimg.SourceType != "dir" || dimg.Files != img.Files {
		t.Errorf("dir import digest %s files %d, tar %s files %d", dimg.Digest, dimg.Files, img.Digest, img.Files)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "bb-dir" || list[1].Name != "busybox" {
		t.Fatalf("list = %v, %v", list, err)
	}

	e.inUse["busybox"] = []int{101, 102}
	err = s.Remove(ctx, "busybox")
	var iu *image.InUseError
	if !errors.As(err, &iu) || !strings.Contains(err.Error(), "101, 102") {
		t.Fatalf("remove in use: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("refused remove touched the files: %v", err)
	}
	delete(e.inUse, "busybox")
	if err := s.Remove(ctx, "busybox"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "busybox"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get after remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "busybox")); !os.IsNotExist(err) {
		t.Errorf("files left after remove: %v", err)
	}
	if err := s.Remove(ctx, "busybox"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("remove twice: %v", err)
	}
}

func TestCompressedTarballs(t *testing.T) {
	s, _ := newStore(t)
	var raw bytes.Buffer
	if err := imagetest.WriteTar(&raw, []imagetest.Entry{{Name: "etc/", Type: tar.TypeDir}, {Name: "etc/motd", Body: "hi\n"},
		{Name: "etc/link", Type: tar.TypeLink, Linkname: "etc/motd"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "root.tar")
	os.WriteFile(plain, raw.Bytes(), 0o644)
	var digest string
	for _, tool := range []string{"", "gzip", "xz", "zstd"} {
		src := plain
		if tool != "" {
			if _, err := exec.LookPath(tool); err != nil {
				t.Fatalf("%s not installed (make deps installs it): %v", tool, err)
			}
			out, err := exec.Command(tool, "-c", plain).Output()
			if err != nil {
				t.Fatal(err)
			}
			src = plain + "." + tool
			os.WriteFile(src, out, 0o644)
		}
		name := "t-" + tool
		if tool == "" {
			name = "t-plain"
		}
		img, err := s.Import(context.Background(), name, src, imagetest.Logger{T: t})
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if digest == "" {
			digest = img.Digest
		} else if img.Digest != digest {
			t.Errorf("%s: digest %s, plain %s", tool, img.Digest, digest)
		}
		root, _ := s.RootFS(name)
		a, _ := os.Stat(filepath.Join(root, "etc/motd"))
		b, _ := os.Stat(filepath.Join(root, "etc/link"))
		if !os.SameFile(a, b) {
			t.Errorf("%s: hard link not preserved", tool)
		}
	}
}

func TestBadInput(t *testing.T) {
	s, e := newStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "bad.tar.gz")
	os.WriteFile(corrupt, []byte("\x1f\x8b\x08\x00garbage that is not gzip"), 0o644)
	escape := filepath.Join(dir, "escape.tar")
	f, _ := os.Create(escape)
	imagetest.WriteTar(f, []imagetest.Entry{{Name: "ok", Body: "x"}, {Name: "../../evil", Body: "x"}})
	f.Close()
	for _, c := range []struct{ name, src, want string }{
		{"-bad", corrupt, "not a valid image name"},
		{"x", "relative/path", "not an absolute path"},
		{"x", "/does/not/exist", "no such file"},
		{"x", corrupt, "gzip"},
		{"x", escape, "would leave the image root"},
	} {
		_, err := s.Import(ctx, c.name, c.src, imagetest.Logger{T: t})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("import %q %q: %v, want %q", c.name, c.src, err, c.want)
		}
	}
	// Nothing left behind.
	ents, _ := os.ReadDir(e.dir)
	if len(ents) != 0 {
		t.Errorf("image dir not empty after failed imports: %v", ents)
	}
	if l, _ := s.List(ctx); len(l) != 0 {
		t.Errorf("images after failures: %v", l)
	}
}

func TestOpenRepairsCrash(t *testing.T) {
	s, e := newStore(t)
	imagetest.Busybox(t, s, "keep")
	// A crash mid-import leaves a work dir; one between rename and record
	// leaves an image dir without a record.
	os.MkdirAll(filepath.Join(e.dir, ".tmp-half-123/rootfs/etc"), 0o755)
	os.MkdirAll(filepath.Join(e.dir, "orphan/rootfs/etc"), 0o555)
	os.Chmod(filepath.Join(e.dir, "orphan/rootfs"), 0o555)
	s2 := e.open(t)
	ents, _ := os.ReadDir(e.dir)
	if len(ents) != 1 || ents[0].Name() != "keep" {
		t.Errorf("after repair: %v", ents)
	}
	if _, err := s2.RootFS("keep"); err != nil {
		t.Error(err)
	}
}

func TestOCIArchiveWhiteouts(t *testing.T) {
	s, _ := newStore(t)
	layers := []imagetest.Layer{
		{Compression: "gzip", Entries: []imagetest.Entry{
			{Name: "etc/", Type: tar.TypeDir}, {Name: "etc/keep", Body: "base\n"}, {Name: "etc/gone", Body: "x"},
			{Name: "var/", Type: tar.TypeDir}, {Name: "var/cache/", Type: tar.TypeDir}, {Name: "var/cache/a", Body: "a"},
			{Name: "var/cache/sub/", Type: tar.TypeDir}, {Name: "var/cache/sub/b", Body: "b"},
			{Name: "bin/", Type: tar.TypeDir}, {Name: "bin/tool", Body: "v1", Mode: 0o755},
		}},
		{Compression: "zstd", Entries: []imagetest.Entry{
			{Name: "etc/.wh.gone"},
			{Name: "var/cache/.wh..wh..opq"},
			{Name: "var/cache/new", Body: "layer2"},
			{Name: "bin/tool", Body: "v2", Mode: 0o755},
		}},
		{Compression: "none", Entries: []imagetest.Entry{
			{Name: "etc/.wh.keep"}, {Name: "etc/keep", Body: "again\n"},
		}},
	}
	p := filepath.Join(t.TempDir(), "img.oci.tar")
	f, _ := os.Create(p)
	if err := imagetest.WriteOCIArchive(f, runtime.GOARCH, layers); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img, err := s.Import(context.Background(), "oci", p, imagetest.Logger{T: t})
	if err != nil {
		t.Fatal(err)
	}
	if img.SourceType != "oci" {
		t.Errorf("source type %q", img.SourceType)
	}
	root, _ := s.RootFS("oci")
	got := map[string]string{}
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			got[rel] = string(b)
		}
		return nil
	})
	want := map[string]string{"etc/keep": "again\n", "var/cache/new": "layer2", "bin/tool": "v2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OCI root mismatch (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(root, "..", "oci")); !os.IsNotExist(err) {
		t.Errorf("OCI layout left in the image dir: %v", err)
	}
}

func TestOCICorruptBlob(t *testing.T) {
	s, e := newStore(t)
	var buf bytes.Buffer
	imagetest.WriteOCIArchive(&buf, runtime.GOARCH, []imagetest.Layer{{Compression: "none", Entries: []imagetest.Entry{{Name: "file", Body: "original content"}}}})
	b := bytes.Replace(buf.Bytes(), []byte("original content"), []byte("tampered content"), 1)
	p := filepath.Join(t.TempDir(), "bad.oci.tar")
	os.WriteFile(p, b, 0o644)
	_, err := s.Import(context.Background(), "bad", p, imagetest.Logger{T: t})
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("import of tampered archive: %v", err)
	}
	if ents, _ := os.ReadDir(e.dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	_ = api.ImageFormatRootFS
}

// TestDiskInUse checks that an ext4 root image can be opened to the UML
// user's group without touching its content or mtime, and that a disk
// guests depend on is not replaced under them while adding another
// format is fine.
func TestDiskInUse(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changes file groups: needs root")
	}
	s, e := newStore(t)
	ctx := context.Background()
	imagetest.Busybox(t, s, "bb")
	img, err := s.MakeDisks(ctx, "bb", image.DiskOptions{Formats: []string{"ext4"}, Size: "32M"}, imagetest.Logger{T: t})
	if err != nil {
		t.Fatal(err)
	}
	p := img.Paths["ext4"]
	before, _ := os.Stat(p)
	if err := s.GrantRead(ctx, "bb", "ext4", 4242); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(p)
	dir, _ := os.Stat(filepath.Dir(p))
	if g := after.Sys().(*syscall.Stat_t).Gid; g != 4242 || after.Mode().Perm() != 0o440 || dir.Mode().Perm() != 0o710 {
		t.Errorf("after GrantRead: file gid %d mode %v, dir mode %v", g, after.Mode(), dir.Mode())
	}
	if !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Error("GrantRead changed the disk's mtime or size: COW files over it would break")
	}
	if err := s.GrantRead(ctx, "bb", "qcow2", 4242); err == nil || !strings.Contains(err.Error(), "berth image disk bb --format qcow2") {
		t.Errorf("GrantRead of a missing format: %v", err)
	}

	e.inUse["bb"] = []int{301}
	var iu *image.InUseError
	_, err = s.MakeDisks(ctx, "bb", image.DiskOptions{Formats: []string{"ext4"}}, imagetest.Logger{T: t})
	if !errors.As(err, &iu) || !strings.Contains(err.Error(), "301") || !strings.Contains(err.Error(), "would be replaced") {
		t.Errorf("replacing a disk in use: %v", err)
	}
	if st, _ := os.Stat(p); !st.ModTime().Equal(before.ModTime()) {
		t.Error("refused disk build touched the disk")
	}
	delete(e.inUse, "bb")
	if _, err := s.MakeDisks(ctx, "bb", image.DiskOptions{Formats: []string{"ext4"}, Size: "32M"}, imagetest.Logger{T: t}); err != nil {
		t.Errorf("replacing an unused disk: %v", err)
	}
	// A guest that uses only the root (a container) does not hold the
	// disks when the store knows who uses the disks.
	s2, err := image.Open(ctx, e.st, e.dir, nil,
		image.WithInUse(func(context.Context, string) ([]int, error) { return []int{120}, nil }),
		image.WithDisksInUse(func(context.Context, string) ([]int, error) { return nil, nil }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.MakeDisks(ctx, "bb", image.DiskOptions{Formats: []string{"ext4"}, Size: "32M"}, imagetest.Logger{T: t}); err != nil {
		t.Errorf("replacing a disk only a container's image uses: %v", err)
	}
	if err := s2.Remove(ctx, "bb"); !errors.As(err, &iu) {
		t.Errorf("remove while a container uses the root: %v", err)
	}
}
