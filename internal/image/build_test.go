package image_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/store"
)

// lines collects a task log.
type lines struct {
	mu sync.Mutex
	l  []string
	t  *testing.T
}

func (l *lines) Printf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(strings.ReplaceAll(fmt.Sprintf(f, a...), "\r", ""))
	l.l = append(l.l, s)
}

func (l *lines) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.l, func(s string) bool { return strings.Contains(s, sub) })
}

func TestBuildOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		o     image.BuildOptions
		field string
	}{
		{image.BuildOptions{}, ""},
		{image.BuildOptions{Suite: "Bookworm!"}, "suite"},
		{image.BuildOptions{Variant: "tiny"}, "variant"},
		{image.BuildOptions{Mirror: "ftp://x"}, "mirror"},
		{image.BuildOptions{Mirror: "http://"}, "mirror"},
		{image.BuildOptions{Include: []string{"ok-pkg", "bad pkg"}}, "include"},
		{image.BuildOptions{Include: []string{"--foo"}}, "include"},
	} {
		err := c.o.Normalize()
		var ie *image.InvalidError
		if c.field == "" {
			if err != nil || c.o.Suite != "bookworm" || c.o.Variant != "minbase" || c.o.Mirror != image.DefaultMirror {
				t.Errorf("defaults: %+v %v", c.o, err)
			}
			continue
		}
		if !errors.As(err, &ie) || ie.Fields[c.field] == "" {
			t.Errorf("%+v: %v, want a %s error", c.o, err, c.field)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4G": 4 << 30, "512M": 512 << 20, "1024": 1024, "2t": 2 << 40} {
		if got, err := image.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "G", "-1G", "1.5G", "99999999999T"} {
		if _, err := image.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

// TestDebootstrapBuild builds a minbase bookworm image with debootstrap
// (packages cached under /var/cache/berth-test, so reruns need no network)
// and checks what it recorded and that the root works under chroot.
func TestDebootstrapBuild(t *testing.T) {
	imagetest.RequireRoot(t, "debootstrap")
	if testing.Short() {
		t.Skip("runs debootstrap: not in -short")
	}
	_, e := newStore(t)
	s, err := image.Open(context.Background(), e.st, e.dir, nil, image.WithDebootstrapCache(imagetest.DebootstrapCache))
	if err != nil {
		t.Fatal(err)
	}
	log := &lines{t: t}
	start := time.Now()
	img, err := s.Build(context.Background(), "bookworm", image.BuildOptions{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrap build: %v, %d files, %d bytes", time.Since(start), img.Files, img.Size)
	if !log.has("Base system installed successfully") {
		t.Errorf("debootstrap output not in the task log")
	}
	if !strings.HasPrefix(img.OSRelease, "Debian GNU/Linux 12") || img.Architecture != "amd64" || img.SourceType != "debootstrap" ||
		img.Source != "debootstrap bookworm/minbase "+image.DefaultMirror || img.Kernel != "" {
		t.Errorf("image = %+v", img)
	}
	root, _ := s.RootFS("bookworm")
	out, err := exec.Command("chroot", root, "/usr/bin/dpkg-query", "-W", "-f=${Status}", "base-files").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "install ok installed") {
		t.Errorf("dpkg in the image: %s %v", out, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/machine-id")); err == nil && len(b) != 0 {
		t.Errorf("image carries the builder's machine-id %q", b)
	}
	if ents, _ := os.ReadDir(e.dir); len(ents) != 1 {
		t.Errorf("image dir holds %v, want just the image", ents)
	}
}

// TestDisksBoot derives an ext4 image and bootable raw and qcow2 disks from
// a Debian image with a kernel (built by debootstrap on the first run,
// imported from the test cache after), checks them with e2fsck, debugfs,
// sgdisk and qemu-img, and boots the qcow2 disk in QEMU (TCG) to a login
// prompt on the serial console.
func TestDisksBoot(t *testing.T) {
	imagetest.RequireRoot(t, "loop mounts and extlinux")
	if testing.Short() {
		t.Skip("builds disks and boots one: not in -short")
	}
	_, e := newStore(t)
	s, err := image.Open(context.Background(), e.st, e.dir, nil, image.WithDebootstrapCache(imagetest.DebootstrapCache),
		image.WithInUse(func(ctx context.Context, n string) ([]int, error) { return e.inUse[n], nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img := imagetest.DebianBoot(t, s, "debian")
	if !strings.HasPrefix(img.Kernel, "/boot/vmlinuz-") || !strings.HasPrefix(img.Initrd, "/boot/initrd.img-") {
		t.Fatalf("kernel %q initrd %q", img.Kernel, img.Initrd)
	}
	root, _ := s.RootFS("debian")
	log := &lines{t: t}
	d := image.DiskOptions{Formats: []string{"ext4", "raw", "qcow2"}}
	start := time.Now()
	img, err = s.MakeDisks(ctx, "debian", d, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("disks: %v", time.Since(start))
	for _, f := range []string{"rootfs", "ext4", "raw", "qcow2"} {
		if !slices.Contains(img.Formats, f) {
			t.Errorf("formats %v lack %s", img.Formats, f)
		}
	}
	if g, _ := s.Get(ctx, "debian"); len(g.Formats) != 4 {
		t.Errorf("stored formats %v", g.Formats)
	}
	for f, p := range img.Paths {
		if fi, err := os.Stat(p); err != nil || (f != "rootfs" && fi.Mode().Perm() != 0o444) {
			t.Errorf("%s at %s: %v %v", f, p, fi.Mode(), err)
		}
	}
	check := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	check("e2fsck", "-fn", img.Paths["ext4"])
	if out := check("debugfs", "-R", "cat /usr/lib/os-release", img.Paths["ext4"]); !strings.Contains(out, "bookworm") {
		t.Errorf("ext4 image lacks the root: %s", out)
	}
	if out := check("sgdisk", "-v", img.Paths["raw"]); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v: %s", out)
	}
	if out := check("qemu-img", "info", img.Paths["qcow2"]); !strings.Contains(out, "file format: qcow2") {
		t.Errorf("qemu-img info: %s", out)
	}
	check("qemu-img", "check", img.Paths["qcow2"])
	// The image's own root stays untouched by the disk build.
	if _, err := os.Stat(filepath.Join(root, "boot/extlinux")); !os.IsNotExist(err) {
		t.Errorf("disk build wrote into the image root: %v", err)
	}

	bootToLogin(t, img.Paths["qcow2"])

	// Busy while a guest uses it; removal takes every format.
	e.inUse["debian"] = []int{300}
	var iu *image.InUseError
	if err := s.Remove(ctx, "debian"); !errors.As(err, &iu) {
		t.Errorf("remove in use: %v", err)
	}
	delete(e.inUse, "debian")
	if err := s.Remove(ctx, "debian"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "debian"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after remove: %v", err)
	}
	if ents, _ := os.ReadDir(e.dir); len(ents) != 0 {
		t.Errorf("left after remove: %v", ents)
	}
	_ = api.ImageFormatRaw
}

// bootedRE matches systemd reaching basic.target on the console (ANSI
// colour codes between the words): the kernel ran, the initramfs found the
// root by PARTUUID, systemd started from it and mounted the fstab.
var bootedRE = regexp.MustCompile(`Reached target .{0,20}basic\.target`)

// bootToLogin boots disk (read-only, snapshot mode) in QEMU with TCG and
// waits for systemd to reach basic.target on the serial console, then for
// a getty's login prompt if it comes within a minute more.
func bootToLogin(t *testing.T, disk string) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 not installed (make deps installs qemu-system-x86): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	accel := "tcg"
	if _, err := os.Stat("/dev/kvm"); err == nil {
		accel = "kvm"
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", accel, "-m", "1024", "-smp", "1", "-nographic", "-no-reboot",
		"-drive", "file="+disk+",format=qcow2,if=virtio,snapshot=on", "-nic", "none", "-serial", "mon:stdio")
	pr, pw, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	start := time.Now()
	var booted time.Time
	var console strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := pr.Read(buf)
		console.Write(buf[:n])
		c := console.String()
		if booted.IsZero() && bootedRE.MatchString(c) {
			booted = time.Now()
			t.Logf("systemd reached basic.target after %v", booted.Sub(start))
			if !strings.Contains(c, "Debian GNU/Linux 12") {
				t.Errorf("console lacks the Debian banner")
			}
		}
		if strings.Contains(c, "login:") {
			t.Logf("booted to a login prompt in %v", time.Since(start))
			return
		}
		if !booted.IsZero() && time.Since(booted) > time.Minute {
			t.Logf("no login prompt a minute after basic.target (slow TCG on a loaded host); the boot itself succeeded")
			return
		}
		if err != nil {
			c = console.String()
			t.Fatalf("QEMU ended before a login prompt (%v); console tail:\n%s", err, c[max(0, len(c)-3000):])
		}
	}
}
