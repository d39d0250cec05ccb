package uml

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/vmtest"
)

// TestMain lets the test binary act as the console relay, as the berth
// binary does through its hidden command.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == RelayCommand {
		os.Exit(RelayMain(os.Args[2:], os.Stderr))
	}
	os.Exit(m.Run())
}

type tlog struct{ t *testing.T }

func (l tlog) Printf(f string, a ...any) { l.t.Helper(); l.t.Logf(f, a...) }

func testDriver(t *testing.T, root string) *Driver {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := New(root, []string{exe, RelayCommand}, nil)
	return d
}

func sum(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// openUp makes the test's temporary directories searchable, as a real
// image store's are, so the unprivileged UML user can reach the base.
func openUp(t *testing.T, dir string) {
	for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
}

// testBase is the shared base the tests boot: the test root imported
// into an image store, with its ext4 root image made by berth's own image
// code (Root, read-only).
type testBase struct {
	Root   string
	Images *image.Store
}

// sharedBase skips unless root tests are enabled and makes the test base
// image "bbuml" in a test directory the unprivileged UML user can reach;
// guests left running in it are killed at the end.
func sharedBase(t *testing.T) (string, testBase) {
	if ok, why := vmtest.Root(); !ok {
		t.Skip(why)
	}
	dir := t.TempDir()
	t.Cleanup(func() { vmtest.KillUnder(dir) })
	openUp(t, dir)
	ctx := context.Background()
	imgs, closeImgs, err := vmtest.OpenStore(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeImgs)
	img, err := vmtest.Image(ctx, imgs, "bbuml", dir, false, "", "ext4")
	if err != nil {
		t.Fatal(err)
	}
	return dir, testBase{Root: img.Paths["ext4"], Images: imgs}
}

// testBridge makes a bridge named prefix<pid> with host address addr for
// the test's duration.
func testBridge(t *testing.T, prefix, addr string) string {
	br := fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
	del, err := vmtest.Bridge(br, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(del)
	return br
}

// TestTwoGuestsShareBase boots two UML guests as the unprivileged
// berth-uml user from one image in the image store (--disk image=NAME:
// its ext4 root image, made by berth's image code) through their own COW
// files: each sees only its own writes, the image stays untouched, the
// first reaches the host over a tuntap NIC in a test bridge; both shut
// down cleanly through mconsole, and the first's COW file is committed
// into a new base with uml_moo.
func TestTwoGuestsShareBase(t *testing.T) {
	dir, im := sharedBase(t)
	imgs, base := im.Images, im.Root
	ctx := context.Background()
	baseSum := sum(t, base)
	baseStat, _ := os.Stat(base)
	br := testBridge(t, "btu", vmtest.Subnet(3)+".1/24")
	d := testDriver(t, filepath.Join(dir, "uml"))
	d.SetImages(imgs)
	a := api.Guest{ID: vmtest.GuestID(1), Kind: api.GuestUML, Config: map[string]string{"memory": "96", "disk0": "image=bbuml",
		"net0": "tuntap,bridge=" + br, "append": "berth.ip=" + vmtest.Subnet(3) + ".2/24 berth.host=" + vmtest.Subnet(3) + ".1 berth.write=alpha"}}
	b := api.Guest{ID: vmtest.GuestID(2), Kind: api.GuestUML, Config: map[string]string{"memory": "96", "disk0": "image=bbuml,cow",
		"append": "berth.write=beta"}}
	if got := d.ImagesOf(b); len(got) != 1 || got[0] != "bbuml" {
		t.Errorf("ImagesOf = %v, want [bbuml]", got)
	}
	for _, g := range []api.Guest{a, b} {
		if errs := d.Validate(g); errs != nil {
			t.Fatal(errs)
		}
		if err := d.Create(ctx, g, tlog{t}); err != nil {
			t.Fatal(err)
		}
		defer d.Destroy(context.Background(), g, tlog{t})
		defer d.Stop(context.Background(), g, tlog{t})
		if err := d.Start(ctx, g, tlog{t}); err != nil {
			t.Fatal(err)
		}
	}
	fail := []string{vmtest.NetFail, "Kernel panic"}
	if out, err := vmtest.WaitFor(d.ConsoleLog(a.ID), 5*time.Minute, fail, vmtest.BootMarker, "BERTH-MARKS: alpha END", vmtest.NetOK, "BERTH-READY"); err != nil {
		t.Fatalf("guest a: %v\n%s", err, out)
	}
	if out, err := vmtest.WaitFor(d.ConsoleLog(b.ID), 5*time.Minute, fail, vmtest.BootMarker, "BERTH-MARKS: beta END", "BERTH-READY"); err != nil {
		t.Fatalf("guest b: %v\n%s", err, out)
	}
	// b has no tuntap NIC, so it always runs unprivileged; a does only
	// where /dev/net/tun is open to it.
	us, err := d.UMLStatus(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if us.Status != api.GuestRunning || us.User != DefaultUser || !strings.Contains(us.Kernel, "6.") || us.MemoryBytes == 0 {
		t.Errorf("status = %+v, want running as %s with a kernel version", us, DefaultUser)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d", us.PID), &st); err != nil || st.Uid == 0 {
		t.Errorf("UML kernel runs as uid %d (%v), want an unprivileged user", st.Uid, err)
	}
	// After a daemon restart a fresh driver finds both guests.
	d2 := testDriver(t, d.Root)
	d2.SetImages(imgs)
	for _, g := range []api.Guest{a, b} {
		if s, err := d2.Adopt(ctx, g); err != nil || s.Status != api.GuestRunning {
			t.Errorf("adopt %d = %+v, %v", g.ID, s, err)
		}
	}
	if err := d2.Suspend(ctx, a, tlog{t}); err != nil {
		t.Fatal(err)
	}
	if s, _ := d2.Status(ctx, a); s.Status != api.GuestPaused {
		t.Errorf("after suspend: %s", s.Status)
	}
	if err := d2.Resume(ctx, a, tlog{t}); err != nil {
		t.Fatal(err)
	}
	if out, err := d2.Sysrq(ctx, a, "m"); err != nil {
		t.Errorf("sysrq m: %q, %v", out, err)
	}
	for _, g := range []api.Guest{a, b} {
		if err := d2.Shutdown(ctx, g, time.Minute, tlog{t}); err != nil {
			t.Fatal(err)
		}
		if out, _ := os.ReadFile(d.ConsoleLog(g.ID)); !strings.Contains(string(out), vmtest.Halting) {
			t.Errorf("guest %d did not shut down cleanly:\n%s", g.ID, out)
		}
		if s, _ := d2.Status(ctx, g); s.Status != api.GuestStopped {
			t.Errorf("guest %d after shutdown: %s", g.ID, s.Status)
		}
	}
	if d.Net.Exists(tapName(a.ID, 0)) {
		t.Error("tap left behind")
	}
	// The COW files hold the writes; the base is untouched.
	if got := sum(t, base); got != baseSum {
		t.Error("base image content changed")
	}
	if st, _ := os.Stat(base); !st.ModTime().Equal(baseStat.ModTime()) {
		t.Error("base image mtime changed")
	}
	h, err := ReadCOWHeader(d.cowPath(a.ID, Disk{Key: "disk0"}))
	if err != nil || h.Backing != base || h.Size != baseStat.Size() || CheckBase(h, base) != nil {
		t.Errorf("COW header %+v, %v", h, err)
	}
	// A second boot of a keeps its own write and still not b's.
	a.Config["append"] = "berth.write=alpha2"
	if err := d.Start(ctx, a, tlog{t}); err != nil {
		t.Fatal(err)
	}
	if out, err := vmtest.WaitFor(d.ConsoleLog(a.ID), 5*time.Minute, fail, "BERTH-MARKS: alpha alpha2 END"); err != nil {
		t.Fatalf("guest a, second boot: %v\n%s", err, out)
	}
	if err := d.Commit(ctx, a, "disk0", filepath.Join(dir, "merged.ext4"), tlog{t}); err == nil {
		t.Error("commit of a running guest succeeded")
	}
	if err := d.Shutdown(ctx, a, time.Minute, tlog{t}); err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(dir, "merged.ext4")
	if err := d.Commit(ctx, a, "disk0", merged, tlog{t}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-R", "ls -l /marks", merged).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "alpha2") || strings.Contains(string(out), "beta") {
		t.Errorf("merged image /marks: %s, %v; want alpha and alpha2, not beta", out, err)
	}
	// Changing the base invalidates the COW files: start refuses clearly.
	os.Chtimes(base, time.Now(), time.Now())
	if err := d.Start(ctx, b, tlog{t}); err == nil || !strings.Contains(err.Error(), "changed after the COW file was made") {
		t.Errorf("start over a changed base: %v", err)
	}
}

// TestBadInput checks errors given before anything starts.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	d := testDriver(t, filepath.Join(dir, "uml"))
	d.Net.SysNet = filepath.Join(dir, "sysnet")
	img := filepath.Join(dir, "img")
	os.WriteFile(img, make([]byte, 4096), 0o644)
	kernel := filepath.Join(dir, "linux")
	os.WriteFile(kernel, []byte("#!/bin/sh\n"), 0o755)
	ln, err := listenAny()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx := context.Background()
	imgs, closeImgs, err := vmtest.OpenStore(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeImgs()
	imagetest.Busybox(t, imgs, "bb") // a root only: no ext4 image
	d.SetImages(imgs)
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		want string
	}{
		{"missing file", map[string]string{"disk0": "/nonexistent.img,cow"}, "/nonexistent.img"},
		{"missing image", map[string]string{"kernel": kernel, "disk0": "image=nosuch"}, `image "nosuch": not found`},
		{"image without ext4", map[string]string{"kernel": kernel, "disk0": "image=bb"}, "berth image disk bb --format ext4"},
		{"missing kernel", map[string]string{"kernel": "/nonexistent/linux"}, "UML kernel /nonexistent/linux"},
		{"unknown bridge", map[string]string{"kernel": kernel, "disk0": img, "net0": "tuntap,bridge=nosuch0"}, "bridge nosuch0 does not exist"},
		{"bad mac", map[string]string{"kernel": kernel, "disk0": img, "net0": "tuntap,bridge=br0,macaddr=fe:fd:zz:00:00:01"}, "not a unicast MAC"},
		{"port in use", map[string]string{"kernel": kernel, "console": fmt.Sprintf("port:%d", ln.port)}, "already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := api.Guest{ID: 4400, Kind: api.GuestUML, Config: tc.cfg}
			err := d.Create(ctx, g, tlog{t})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create = %v, want %q", err, tc.want)
			}
			t.Logf("%v", err)
			if _, err := os.Stat(d.dir(4400)); err == nil {
				t.Error("failed create left a directory")
			}
		})
	}
}
