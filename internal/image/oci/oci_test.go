package oci_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthhq/berth/internal/image/oci"
)

func TestParseDigest(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	for _, c := range []struct {
		in string
		ok bool
	}{
		{good, true},
		{"sha512:" + strings.Repeat("0", 128), true},
		{"sha256:" + strings.Repeat("AB", 32), false},
		{"sha256:../../etc/passwd", false},
		{"md5:" + strings.Repeat("a", 32), false},
		{good + "/x", false},
		{"", false},
	} {
		_, _, err := oci.ParseDigest(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseDigest(%q): %v", c.in, err)
		}
	}
}

func TestSelect(t *testing.T) {
	ds := []oci.Descriptor{
		{Digest: "a", Platform: &oci.Platform{OS: "linux", Architecture: "arm64"}},
		{Digest: "b", Platform: &oci.Platform{OS: "linux", Architecture: "amd64"}},
	}
	if d, err := oci.Select(ds, "amd64"); err != nil || d.Digest != "b" {
		t.Errorf("select amd64: %v %v", d, err)
	}
	if _, err := oci.Select(ds, "riscv64"); err == nil || !strings.Contains(err.Error(), "linux/arm64, linux/amd64") {
		t.Errorf("select riscv64: %v", err)
	}
	if _, err := oci.Select(nil, "amd64"); err == nil {
		t.Error("select from nothing succeeded")
	}
}

// FuzzLayout reads arbitrary index.json content: it must never panic or
// open a blob outside blobs/.
func FuzzLayout(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2}]}`))
	f.Add([]byte(`{"manifests":[{"digest":"sha256:../../../etc/passwd"}]}`))
	f.Add([]byte(`{"manifests":[]}`))
	f.Fuzz(func(t *testing.T, index []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
		os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
		l, err := oci.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = l.Resolve("amd64")
		ix, err := l.Index()
		if err != nil {
			return
		}
		for _, d := range ix.Manifests {
			p, err := l.BlobPath(d.Digest)
			if err == nil && !strings.HasPrefix(p, filepath.Join(dir, "blobs")+"/") {
				t.Fatalf("digest %q maps outside blobs: %s", d.Digest, p)
			}
		}
	})
}
