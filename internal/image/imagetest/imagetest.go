// Package imagetest makes small, real images for tests and benchmarks of
// berth's image store and of the guest drivers that use it: a busybox root
// file system built from Debian's busybox-static (as a tarball or imported
// into an image store), and OCI image archives written from Go. It needs no
// network and no root. It is for tests only.
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image"
)

// BusyboxPath is where Debian's busybox-static puts its binary.
const BusyboxPath = "/bin/busybox"

// Entry is one file of a test tarball or layer.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg (default), TypeDir, TypeSymlink, TypeLink, TypeChar…
	Mode     int64
	Body     string
	Linkname string
	UID, GID int
}

// WriteTar writes entries as a tar stream.
func WriteTar(w io.Writer, entries []Entry) error {
	tw := tar.NewWriter(w)
	mt := time.Unix(1700000000, 0)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Linkname,
			Uid: e.UID, Gid: e.GID, ModTime: mt, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = map[byte]int64{tar.TypeDir: 0o755, tar.TypeSymlink: 0o777}[h.Typeflag]
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// WriteTarFile writes entries as a tar file at path.
func WriteTarFile(path string, entries []Entry) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteTar(f, entries); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// BusyboxEntries returns the entries of a minimal busybox root: the
// busybox binary read from bin, a symlink per applet (from busybox
// --list-full), /etc/passwd, /etc/group, /etc/os-release and the usual
// empty directories. Everything is owned by root.
func BusyboxEntries(bin string) ([]Entry, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("busybox: %w (install Debian's busybox-static: make deps)", err)
	}
	out, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list-full: %w", err)
	}
	es := []Entry{{Name: "./", Type: tar.TypeDir}}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "var", "var/log", "home"} {
		es = append(es, Entry{Name: d + "/", Type: tar.TypeDir})
	}
	es = append(es, Entry{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777}, Entry{Name: "root/", Type: tar.TypeDir, Mode: 0o700})
	es = append(es, Entry{Name: "bin/busybox", Mode: 0o755, Body: string(b)})
	for _, l := range strings.Fields(string(out)) {
		if l == "bin/busybox" || strings.Contains(l, "..") {
			continue
		}
		es = append(es, Entry{Name: l, Type: tar.TypeSymlink, Linkname: "/bin/busybox"})
	}
	es = append(es,
		Entry{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		Entry{Name: "etc/group", Body: "root:x:0:\nnogroup:x:65534:\n"},
		Entry{Name: "etc/hostname", Body: "busybox\n"},
		Entry{Name: "etc/os-release", Body: "NAME=\"BusyBox\"\nPRETTY_NAME=\"BusyBox (berth test image)\"\nID=busybox\n"},
	)
	return es, nil
}

var (
	tarOnce sync.Once
	tarPath string
	tarErr  error
)

// BusyboxTar returns the path of a busybox root file system tarball,
// written once per process into the system temp dir (named by the
// busybox binary's hash, so reruns reuse it). It fails the test when
// busybox-static is missing.
func BusyboxTar(t testing.TB) string {
	t.Helper()
	tarOnce.Do(func() { tarPath, tarErr = WriteBusyboxTar(os.TempDir()) })
	if tarErr != nil {
		t.Fatal(tarErr)
	}
	return tarPath
}

// WriteBusyboxTar writes the busybox tarball into dir (if not there
// already) and returns its path; for benchmarks and tools.
func WriteBusyboxTar(dir string) (string, error) {
	b, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return "", fmt.Errorf("busybox: %w (install Debian's busybox-static: make deps)", err)
	}
	sum := sha256.Sum256(b)
	p := filepath.Join(dir, "berth-busybox-"+hex.EncodeToString(sum[:8])+".tar")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	es, err := BusyboxEntries(BusyboxPath)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".berth-busybox-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if err := WriteTar(f, es); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return p, os.Rename(f.Name(), p)
}

// Logger is a test logger for image tasks.
type Logger struct{ T testing.TB }

// Printf logs through the test.
func (l Logger) Printf(format string, args ...any) { l.T.Helper(); l.T.Logf(format, args...) }

// Busybox imports the busybox tarball into s as name and returns the
// image; its RootFS is ready for an overlayfs lower layer.
func Busybox(t testing.TB, s *image.Store, name string) api.Image {
	t.Helper()
	img, err := s.Import(context.Background(), name, BusyboxTar(t), Logger{t})
	if err != nil {
		t.Fatalf("import busybox image: %v", err)
	}
	return img
}

// Layer is one OCI layer: its entries and compression ("gzip", "none";
// "zstd" needs the zstd tool).
type Layer struct {
	Entries     []Entry
	Compression string
}

// WriteOCIArchive writes an oci-archive tarball (oci-layout, index.json,
// blobs/sha256/…) holding one linux/amd64 image with the given layers, as
// skopeo copy … oci-archive: would.
func WriteOCIArchive(w io.Writer, arch string, layers []Layer) error {
	blobs := map[string][]byte{}
	add := func(b []byte) (string, int64) {
		s := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(s[:])
		blobs[d] = b
		return d, int64(len(b))
	}
	type desc struct {
		MediaType string            `json:"mediaType"`
		Digest    string            `json:"digest"`
		Size      int64             `json:"size"`
		Platform  map[string]string `json:"platform,omitempty"`
	}
	var lds []desc
	var diffIDs []string
	for _, l := range layers {
		var raw bytes.Buffer
		if err := WriteTar(&raw, l.Entries); err != nil {
			return err
		}
		ds := sha256.Sum256(raw.Bytes())
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(ds[:]))
		mt := "application/vnd.oci.image.layer.v1.tar"
		data := raw.Bytes()
		switch l.Compression {
		case "gzip":
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(data)
			zw.Close()
			data, mt = z.Bytes(), mt+"+gzip"
		case "zstd":
			cmd := exec.Command("zstd", "-q", "-c")
			cmd.Stdin = bytes.NewReader(data)
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("zstd: %w", err)
			}
			data, mt = out, mt+"+zstd"
		}
		d, n := add(data)
		lds = append(lds, desc{MediaType: mt, Digest: d, Size: n})
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": arch, "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cd, cn := add(cfg)
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cd, Size: cn}, "layers": lds})
	md, mn := add(man)
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []desc{{MediaType: "application/vnd.oci.image.manifest.v1+json",
		Digest: md, Size: mn, Platform: map[string]string{"architecture": arch, "os": "linux"}}}})
	es := []Entry{{Name: "oci-layout", Body: `{"imageLayoutVersion":"1.0.0"}`}, {Name: "index.json", Body: string(index)},
		{Name: "blobs/", Type: tar.TypeDir}, {Name: "blobs/sha256/", Type: tar.TypeDir}}
	for d, b := range blobs {
		es = append(es, Entry{Name: "blobs/sha256/" + strings.TrimPrefix(d, "sha256:"), Body: string(b)})
	}
	return WriteTar(w, es)
}

// DebootstrapCache is where tests keep debootstrap's downloaded packages
// between runs, so CI reruns build Debian images without the network.
const DebootstrapCache = "/var/cache/berth-test/debootstrap"

// RequireRoot skips the test unless BERTH_TEST_ROOT=1 and it runs as root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("BERTH_TEST_ROOT") != "1" || os.Geteuid() != 0 {
		t.Skipf("%s needs root: run with BERTH_TEST_ROOT=1 as root (make test sets it)", why)
	}
}

// Debian builds a bookworm image with debootstrap into s (open it with
// image.WithDebootstrapCache(DebootstrapCache) to reuse downloads), with
// extra packages include. It needs root and Debian's archive the first time.
func Debian(t testing.TB, s *image.Store, name string, include ...string) api.Image {
	t.Helper()
	RequireRoot(t, "debootstrap")
	img, err := s.Build(context.Background(), name, image.BuildOptions{Include: include}, Logger{t})
	if err != nil {
		t.Fatalf("build Debian image: %v", err)
	}
	return img
}

// ImageCache is where tests keep whole built root file systems between
// runs (zstd tarballs), so that tests needing a bootable Debian root do
// not run debootstrap and mkinitramfs every time.
const ImageCache = "/var/cache/berth-test/images"

// DebianBoot returns a bookworm image with a kernel, initramfs and
// systemd (image.BootPackages) in s. The first run builds it with
// debootstrap and caches its root as a tarball in ImageCache; later runs
// import that tarball. It needs root.
func DebianBoot(t testing.TB, s *image.Store, name string) api.Image {
	t.Helper()
	RequireRoot(t, "building a bootable Debian image")
	cached := filepath.Join(ImageCache, "debian-bookworm-boot.tar.zst")
	if _, err := os.Stat(cached); err == nil {
		img, err := s.Import(context.Background(), name, cached, Logger{t})
		if err == nil && img.Kernel != "" {
			return img
		}
		t.Logf("cached image %s unusable (%v): rebuilding", cached, err)
		if err == nil {
			s.Remove(context.Background(), name)
		}
	}
	RequireRoot(t, "debootstrap")
	img, err := s.Build(context.Background(), name, image.BuildOptions{Include: image.BootPackages, VMInitramfs: true}, Logger{t})
	if err != nil {
		t.Fatalf("build bootable Debian image: %v", err)
	}
	root, err := s.RootFS(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(ImageCache, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := cached + ".tmp"
	cmd := exec.Command("sh", "-c", `tar --numeric-owner --xattrs --xattrs-include='*' -C "$1" -cf - . | zstd -q -T0 -3 -o "$2" -f`, "sh", root, tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Logf("caching the built image failed (next run rebuilds): %v %s", err, out)
		return img
	}
	if err := os.Rename(tmp, cached); err != nil {
		t.Logf("caching the built image: %v", err)
	}
	return img
}
