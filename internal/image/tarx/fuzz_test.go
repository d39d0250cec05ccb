package tarx_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/image/tarx"
)

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"./etc/passwd", "/abs", "../x", "a/../b", "a//b/./c/", ".wh..wh..opq", "", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := tarx.CleanName(name)
		if err != nil {
			return
		}
		if got != "." && (!filepath.IsLocal(got) || strings.HasPrefix(got, "/") || path.Clean(got) != got) {
			t.Fatalf("CleanName(%q) = %q: not a clean local path", name, got)
		}
		for _, p := range strings.Split(got, "/") {
			if p == ".." {
				t.Fatalf("CleanName(%q) = %q holds ..", name, got)
			}
		}
		if k, target, err := tarx.ParseWhiteout(got); err == nil && k != tarx.NotWhiteout {
			if target != "." && (!filepath.IsLocal(target) || strings.Contains("/"+target+"/", "/../")) {
				t.Fatalf("ParseWhiteout(%q) target %q escapes", got, target)
			}
		}
	})
}

// FuzzExtract feeds arbitrary bytes as a tar stream, with and without
// whiteouts: whatever happens, nothing outside the root changes.
func FuzzExtract(f *testing.F) {
	seeds := [][]imagetest.Entry{
		{{Name: "etc/", Type: tar.TypeDir}, {Name: "etc/passwd", Body: "root"}, {Name: "etc/.wh.passwd"}},
		{{Name: "l", Type: tar.TypeSymlink, Linkname: "../outside"}, {Name: "l/x", Body: "x"}},
		{{Name: "h", Type: tar.TypeLink, Linkname: "../outside/keep"}},
		{{Name: "d/.wh..wh..opq"}, {Name: "d/x", Body: "y"}, {Name: ".wh.d"}},
	}
	for _, es := range seeds {
		var b bytes.Buffer
		imagetest.WriteTar(&b, es)
		f.Add(b.Bytes(), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, whiteouts bool) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		outside := filepath.Join(base, "outside")
		os.Mkdir(root, 0o755)
		os.Mkdir(outside, 0o755)
		os.WriteFile(filepath.Join(outside, "keep"), []byte("keep"), 0o644)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := tarx.Extract(ctx, bytes.NewReader(data), root, tarx.Options{Whiteouts: whiteouts, MaxFileSize: 1 << 20})
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("extraction took more than 2s")
		}
		ents, _ := os.ReadDir(base)
		if len(ents) != 2 {
			t.Fatalf("entries beside the root: %v", ents)
		}
		ents, _ = os.ReadDir(outside)
		if b, _ := os.ReadFile(filepath.Join(outside, "keep")); len(ents) != 1 || string(b) != "keep" {
			t.Fatalf("outside changed: %v %q", ents, b)
		}
	})
}
