package tarx_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/image/tarx"
)

func TestCleanName(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"./etc/passwd", "etc/passwd", ""},
		{"/etc/passwd", "etc/passwd", ""},
		{"etc//x/./y/", "etc/x/y", ""},
		{"./", ".", ""},
		{"", ".", ""},
		{"../etc/passwd", "", "leave the image root"},
		{"a/../../b", "", "leave the image root"},
		{"a/..", "", "leave the image root"},
		{"a\x00b", "", "NUL"},
	} {
		got, err := tarx.CleanName(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("CleanName(%q) = %q, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestParseWhiteout(t *testing.T) {
	for _, c := range []struct {
		in     string
		kind   tarx.WhiteoutKind
		target string
		err    bool
	}{
		{"etc/passwd", tarx.NotWhiteout, "", false},
		{"etc/.wh.passwd", tarx.Whiteout, "etc/passwd", false},
		{".wh.etc", tarx.Whiteout, "etc", false},
		{"var/cache/.wh..wh..opq", tarx.Opaque, "var/cache", false},
		{".wh..wh..opq", tarx.Opaque, ".", false},
		{"etc/.wh.", 0, "", true},
		{"etc/.wh..", 0, "", true},
		{"etc/.wh...", 0, "", true},
	} {
		k, tg, err := tarx.ParseWhiteout(c.in)
		if (err != nil) != c.err || (!c.err && (k != c.kind || tg != c.target)) {
			t.Errorf("ParseWhiteout(%q) = %v %q %v", c.in, k, tg, err)
		}
	}
}

func extract(t *testing.T, es []imagetest.Entry, o tarx.Options) (string, error) {
	t.Helper()
	var b bytes.Buffer
	if err := imagetest.WriteTar(&b, es); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	root := filepath.Join(base, "root")
	os.Mkdir(root, 0o755)
	_, err := tarx.Extract(context.Background(), &b, root, o)
	return root, err
}

// No entry, however linked, writes outside the root.
func TestNoEscape(t *testing.T) {
	for name, es := range map[string][]imagetest.Entry{
		"absolute symlink parent": {{Name: "etc", Type: tar.TypeSymlink, Linkname: "/outside"}, {Name: "etc/passwd", Body: "x"}},
		"relative symlink parent": {{Name: "etc", Type: tar.TypeSymlink, Linkname: "../../outside"}, {Name: "etc/passwd", Body: "x"}},
		"symlink chain":           {{Name: "a", Type: tar.TypeSymlink, Linkname: "b"}, {Name: "b", Type: tar.TypeSymlink, Linkname: "../.."}, {Name: "a/outside/x", Body: "x"}},
		"dotdot":                  {{Name: "../outside/x", Body: "x"}},
		"hardlink out":            {{Name: "x", Type: tar.TypeLink, Linkname: "../outside/secret"}},
		"hardlink via symlink":    {{Name: "l", Type: tar.TypeSymlink, Linkname: "/.."}, {Name: "x", Type: tar.TypeLink, Linkname: "l/outside/secret"}},
		"symlink final":           {{Name: "f", Type: tar.TypeSymlink, Linkname: "../outside/secret"}, {Name: "f", Body: "overwrite"}},
	} {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			imagetest.WriteTar(&b, es)
			base := t.TempDir()
			root := filepath.Join(base, "root")
			os.Mkdir(root, 0o755)
			os.Mkdir(filepath.Join(base, "outside"), 0o755)
			os.WriteFile(filepath.Join(base, "outside/secret"), []byte("secret"), 0o600)
			_, err := tarx.Extract(context.Background(), &b, root, tarx.Options{Owners: true})
			t.Logf("extract: %v", err)
			ents, _ := os.ReadDir(filepath.Join(base, "outside"))
			if len(ents) != 1 {
				t.Errorf("outside dir changed: %v", ents)
			}
			if b, _ := os.ReadFile(filepath.Join(base, "outside/secret")); string(b) != "secret" {
				t.Errorf("outside file changed: %q", b)
			}
			if fi, _ := os.Stat(filepath.Join(base, "outside/secret")); fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Errorf("outside file got a hard link inside the image")
			}
		})
	}
}

func TestSymlinkParentResolvesInsideRoot(t *testing.T) {
	// Debian's merged /usr: lib -> usr/lib; a later entry through the link
	// lands inside the root.
	root, err := extract(t, []imagetest.Entry{{Name: "usr/", Type: tar.TypeDir}, {Name: "usr/lib/", Type: tar.TypeDir},
		{Name: "lib", Type: tar.TypeSymlink, Linkname: "/usr/lib"}, {Name: "lib/libx.so", Body: "elf"}}, tarx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "usr/lib/libx.so")); err != nil || string(b) != "elf" {
		t.Errorf("usr/lib/libx.so: %q %v", b, err)
	}
}

func TestReplaceAndModes(t *testing.T) {
	root, err := extract(t, []imagetest.Entry{
		{Name: "d/", Type: tar.TypeDir, Mode: 0o700},
		{Name: "d/f", Body: "one"},
		{Name: "d/f", Body: "two", Mode: 0o4755},
		{Name: "d/", Type: tar.TypeDir, Mode: 0o750},
		{Name: "p", Type: tar.TypeFifo, Mode: 0o640},
		{Name: "h", Type: tar.TypeLink, Linkname: "d/f"},
	}, tarx.Options{Owners: true})
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(root, "d/f"))
	if b, _ := os.ReadFile(filepath.Join(root, "d/f")); string(b) != "two" || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("d/f = %q mode %v", b, fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(root, "d")); fi.Mode().Perm() != 0o750 {
		t.Errorf("d mode %v", fi.Mode())
	}
	if fi, _ := os.Lstat(filepath.Join(root, "p")); fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("fifo mode %v", fi.Mode())
	}
	a, _ := os.Stat(filepath.Join(root, "h"))
	if !os.SameFile(a, fi) && !os.SameFile(a, mustStat(t, filepath.Join(root, "d/f"))) {
		t.Errorf("hard link not shared")
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// As root: owners, device nodes and xattrs are restored.
func TestRootOwnersDevicesXattrs(t *testing.T) {
	if os.Getenv("BERTH_TEST_ROOT") != "1" || os.Geteuid() != 0 {
		t.Skip("restoring owners and device nodes needs root: run with BERTH_TEST_ROOT=1 as root (make test)")
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3})
	tw.WriteHeader(&tar.Header{Name: "dev/loopx", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 7, Devminor: 99, Gid: 6})
	tw.WriteHeader(&tar.Header{Name: "home/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "home/u", Typeflag: tar.TypeReg, Mode: 0o2750, Uid: 1234, Gid: 5678, Size: 1,
		PAXRecords: map[string]string{"SCHILY.xattr.user.berth": "yes", "SCHILY.xattr.trusted.berth": "t"}, Format: tar.FormatPAX})
	tw.Write([]byte("u"))
	tw.WriteHeader(&tar.Header{Name: "home/link", Typeflag: tar.TypeSymlink, Linkname: "u", Uid: 1234, Gid: 5678})
	tw.Close()
	root := t.TempDir()
	st, err := tarx.Extract(context.Background(), &b, root, tarx.Options{Owners: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != 0 {
		t.Errorf("skipped %d as root", st.Skipped)
	}
	var s unix.Stat_t
	unix.Lstat(filepath.Join(root, "dev/null"), &s)
	if s.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(s.Rdev) != 1 || unix.Minor(s.Rdev) != 3 || s.Mode&0o777 != 0o666 {
		t.Errorf("dev/null mode %o rdev %d:%d", s.Mode, unix.Major(s.Rdev), unix.Minor(s.Rdev))
	}
	unix.Lstat(filepath.Join(root, "dev/loopx"), &s)
	if s.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Minor(s.Rdev) != 99 || s.Gid != 6 {
		t.Errorf("dev/loopx mode %o rdev %d gid %d", s.Mode, s.Rdev, s.Gid)
	}
	unix.Lstat(filepath.Join(root, "home/u"), &s)
	if s.Uid != 1234 || s.Gid != 5678 || s.Mode&0o7777 != 0o2750 {
		t.Errorf("home/u uid %d gid %d mode %o (setgid must survive chown)", s.Uid, s.Gid, s.Mode&0o7777)
	}
	unix.Lstat(filepath.Join(root, "home/link"), &s)
	if s.Uid != 1234 {
		t.Errorf("symlink owner %d", s.Uid)
	}
	for k, want := range map[string]string{"user.berth": "yes", "trusted.berth": "t"} {
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(filepath.Join(root, "home/u"), k, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("xattr %s = %q, %v", k, buf[:max(n, 0)], err)
		}
	}
}

func TestOpaqueKeepsSameLayer(t *testing.T) {
	base := t.TempDir()
	apply := func(es []imagetest.Entry) {
		var b bytes.Buffer
		imagetest.WriteTar(&b, es)
		if _, err := tarx.Extract(context.Background(), &b, base, tarx.Options{Whiteouts: true}); err != nil {
			t.Fatal(err)
		}
	}
	apply([]imagetest.Entry{{Name: "d/", Type: tar.TypeDir}, {Name: "d/old", Body: "old"}, {Name: "d/sub/", Type: tar.TypeDir}, {Name: "d/sub/x", Body: "x"}})
	// New entries come before the opaque marker: they stay.
	apply([]imagetest.Entry{{Name: "d/new/y", Body: "y"}, {Name: "d/.wh..wh..opq"}, {Name: "gone/.wh.nothing"}})
	var got []string
	filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(base, p)
		got = append(got, rel)
		return nil
	})
	if strings.Join(got, " ") != ". d d/new d/new/y" {
		t.Errorf("tree after opaque: %v", got)
	}
}
