package qemu

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/vmtest"
)

type tlog struct{ t *testing.T }

func (l tlog) Printf(f string, a ...any) { l.t.Helper(); l.t.Logf(f, a...) }

// TestBootTCG imports a busybox root with Debian's kernel into an image
// store and makes its bootable qcow2 disk with berth's own image code,
// then boots it under QEMU (TCG here: the host has no /dev/kvm) through a
// per-VM qcow2 overlay (SeaBIOS, extlinux, kernel, initramfs), waits for
// the marker on the serial console, checks the guest pings the host over
// a test bridge, takes a snapshot, pauses and resumes, re-adopts it from
// a fresh driver and shuts it down with the ACPI power button.
func TestBootTCG(t *testing.T) {
	if ok, why := vmtest.Root(); !ok {
		t.Skip(why)
	}
	dir := t.TempDir()
	defer vmtest.KillUnder(dir)
	ctx := context.Background()
	imgs, closeImgs, err := vmtest.OpenStore(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeImgs()
	img, err := vmtest.Image(ctx, imgs, "bbvm", dir, true, "quiet berth.ip="+vmtest.Subnet(1)+".2/24 berth.host="+vmtest.Subnet(1)+".1", "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	baseStat, _ := os.Stat(img.Paths["qcow2"])
	br := fmt.Sprintf("btq%d", os.Getpid()%100000)
	delBr, err := vmtest.Bridge(br, vmtest.Subnet(1)+".1/24")
	if err != nil {
		t.Fatal(err)
	}
	defer delBr()
	d := New(filepath.Join(dir, "vms"), nil)
	d.SetImages(imgs)
	g := api.Guest{ID: vmtest.GuestID(1), Kind: api.GuestVM, Config: map[string]string{
		"memory": "256", "disk0": "image=bbvm", "net0": "bridge=" + br,
	}}
	if got := d.ImagesOf(g); len(got) != 1 || got[0] != "bbvm" {
		t.Errorf("ImagesOf = %v, want [bbvm]", got)
	}
	if errs := d.Validate(g); errs != nil {
		t.Fatal(errs)
	}
	if err := d.Create(ctx, g, tlog{t}); err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(context.Background(), g, tlog{t})
	// The VM's disk is an overlay on the image's disk, not a copy.
	if bi, err := imageInfo(ctx, d.QemuImg, d.diskPath(g.ID, Disk{Key: "disk0"})); err != nil || bi.Format != "qcow2" {
		t.Errorf("overlay: %+v, %v", bi, err)
	}
	if out, err := exec.Command("qemu-img", "info", "-U", d.diskPath(g.ID, Disk{Key: "disk0"})).Output(); err != nil ||
		!strings.Contains(string(out), "backing file: "+img.Paths["qcow2"]) {
		t.Errorf("overlay does not name the image's disk as its backing file: %s %v", out, err)
	}
	defer d.Stop(context.Background(), g, tlog{t})
	if err := d.Start(ctx, g, tlog{t}); err != nil {
		t.Fatal(err)
	}
	out, err := vmtest.WaitFor(d.ConsoleLog(g.ID), 5*time.Minute, []string{vmtest.NetFail, "Kernel panic"}, vmtest.BootMarker, vmtest.NetOK, "BERTH-ACPID", "BERTH-READY")
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, out)
	}
	vs, err := d.VMStatus(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if vs.Status != api.GuestRunning || vs.QMPStatus != "running" || vs.PID == 0 || vs.MemoryBytes == 0 {
		t.Errorf("status = %+v, want running with PID and memory", vs)
	}
	if want := map[bool]string{true: "kvm", false: "tcg"}[d.useKVM()]; vs.Accelerator != want {
		t.Errorf("accelerator = %q, want %q", vs.Accelerator, want)
	}
	// The VNC display answers on its unix socket with the RFB greeting.
	if c, err := net.Dial("unix", vs.VNC); err != nil {
		t.Errorf("VNC socket: %v", err)
	} else {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 12)
		if _, err := io.ReadFull(c, buf); err != nil || !strings.HasPrefix(string(buf), "RFB 003.") {
			t.Errorf("VNC greeting %q, %v", buf, err)
		}
		c.Close()
	}
	// A fresh driver (as after a daemon restart) adopts the running VM.
	d2 := New(d.Root, nil)
	st, err := d2.Adopt(ctx, g)
	if err != nil || st.Status != api.GuestRunning || st.PID != vs.PID {
		t.Errorf("adopt = %+v, %v; want running PID %d", st, err, vs.PID)
	}
	if err := d2.Suspend(ctx, g, tlog{t}); err != nil {
		t.Fatal(err)
	}
	if st, _ := d2.Status(ctx, g); st.Status != api.GuestPaused {
		t.Errorf("after suspend status = %s, want paused", st.Status)
	}
	if err := d2.Resume(ctx, g, tlog{t}); err != nil {
		t.Fatal(err)
	}
	if err := d2.SnapshotCreate(ctx, g, "booted", tlog{t}); err != nil {
		t.Fatal(err)
	}
	snaps, err := d2.Snapshots(ctx, g)
	if err != nil || len(snaps) != 1 || snaps[0].Name != "booted" || strings.Join(snaps[0].Disks, ",") != "disk0" {
		t.Errorf("snapshots = %+v, %v; want booted on disk0", snaps, err)
	}
	if err := d2.Shutdown(ctx, g, 90*time.Second, tlog{t}); err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(d.ConsoleLog(g.ID))
	if !strings.Contains(string(log), vmtest.Halting) {
		t.Errorf("the guest did not run its shutdown actions: the power button was not honoured\n%s", log)
	}
	if st, _ := d2.Status(ctx, g); st.Status != api.GuestStopped {
		t.Errorf("after shutdown status = %s", st.Status)
	}
	if d.Net.Exists(tapName(g.ID, 0)) {
		t.Error("tap left behind after shutdown")
	}
	for _, f := range []string{"qmp.sock", "serial.sock", "vnc.sock", "qemu.pid"} {
		if _, err := os.Stat(filepath.Join(d.paths(g.ID).dir, f)); err == nil {
			t.Errorf("%s left behind after shutdown", f)
		}
	}
	// Stopped: snapshots go through qemu-img.
	if err := d2.SnapshotRollback(ctx, g, "booted", tlog{t}); err != nil {
		t.Fatal(err)
	}
	if err := d2.SnapshotDelete(ctx, g, "booted", tlog{t}); err != nil {
		t.Fatal(err)
	}
	if snaps, _ := d2.Snapshots(ctx, g); len(snaps) != 0 {
		t.Errorf("snapshot not deleted: %+v", snaps)
	}
	if st, _ := os.Stat(img.Paths["qcow2"]); !st.ModTime().Equal(baseStat.ModTime()) || st.Size() != baseStat.Size() {
		t.Error("the image's disk changed: the VM wrote through its overlay")
	}
}

// TestBadInput checks that bad configurations fail before anything is made
// and that a failed start leaves nothing behind.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	d := New(filepath.Join(dir, "vms"), nil)
	d.Net.SysNet = filepath.Join(dir, "sysnet")
	os.MkdirAll(filepath.Join(d.Net.SysNet, "br0", "bridge"), 0o755)
	os.MkdirAll(filepath.Join(d.Net.SysNet, "eth0"), 0o755)
	d.ROMDir = filepath.Join(dir, "no-roms")
	ctx := context.Background()
	imgs, closeImgs, err := vmtest.OpenStore(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeImgs()
	imagetest.Busybox(t, imgs, "bb") // a root only: no bootable disk
	d.SetImages(imgs)
	base := filepath.Join(dir, "base.raw")
	os.WriteFile(base, nil, 0o444)
	os.Truncate(base, 64<<20)
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		want string
	}{
		{"missing kernel", map[string]string{"kernel": "/nonexistent/vmlinuz"}, "kernel /nonexistent/vmlinuz"},
		{"unknown bridge", map[string]string{"net0": "bridge=nosuchbr"}, "bridge nosuchbr does not exist"},
		{"not a bridge", map[string]string{"net0": "bridge=eth0"}, "not a bridge"},
		{"bad mac", map[string]string{"net0": "bridge=br0,macaddr=52:54:00:zz:00:01"}, "not a MAC address"},
		{"too large", map[string]string{"disk0": "size=1000000T"}, "larger than the free space"},
		{"missing backing", map[string]string{"disk0": "backing=/nonexistent.raw"}, "/nonexistent.raw"},
		{"overlay smaller than its base", map[string]string{"disk0": "backing=" + base + ",size=1M"}, "smaller than its base"},
		{"missing image", map[string]string{"disk0": "image=nosuch"}, `image "nosuch": not found`},
		{"image without a bootable disk", map[string]string{"disk0": "image=bb"}, "berth image disk bb --format qcow2"},
		{"no iPXE ROM", map[string]string{"net0": "bridge=br0,model=e1000", "boot": "order=net"}, "efi-e1000.rom: no such file or directory (install Debian's ipxe-qemu)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := api.Guest{ID: 4200, Kind: api.GuestVM, Config: tc.cfg}
			err := d.Create(ctx, g, tlog{t})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create = %v, want an error containing %q", err, tc.want)
			}
			t.Logf("%v", err)
			if _, err := os.Stat(d.paths(4200).dir); err == nil {
				t.Error("failed create left the VM directory behind")
			}
		})
	}
}

// TestFailedStartLeavesNothing starts a VM whose kernel QEMU cannot load,
// with a NIC in a test bridge: the start fails, and neither the tap nor
// the sockets, the pidfile or a QEMU process stay behind.
func TestFailedStartLeavesNothing(t *testing.T) {
	if ok, why := vmtest.Root(); !ok {
		t.Skip(why)
	}
	dir := t.TempDir()
	defer vmtest.KillUnder(dir)
	br := fmt.Sprintf("btf%d", os.Getpid()%100000)
	delBr, err := vmtest.Bridge(br, vmtest.Subnet(2)+".1/24")
	if err != nil {
		t.Fatal(err)
	}
	defer delBr()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, []byte("not a kernel"), 0o644)
	d := New(filepath.Join(dir, "vms"), nil)
	ctx := context.Background()
	g := api.Guest{ID: vmtest.GuestID(2), Kind: api.GuestVM, Config: map[string]string{"memory": "64", "disk0": "size=16M",
		"net0": "bridge=" + br, "kernel": kernel}}
	if err := d.Create(ctx, g, tlog{t}); err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(context.Background(), g, tlog{t})
	err = d.Start(ctx, g, tlog{t})
	if err == nil || !strings.Contains(err.Error(), "QEMU failed to start") {
		t.Fatalf("Start = %v, want QEMU's failure", err)
	}
	t.Log(err)
	if d.Net.Exists(tapName(g.ID, 0)) {
		t.Error("tap left behind by a failed start")
	}
	for _, f := range []string{"qmp.sock", "serial.sock", "vnc.sock", "qemu.pid"} {
		if _, err := os.Stat(filepath.Join(d.paths(g.ID).dir, f)); err == nil {
			t.Errorf("%s left behind by a failed start", f)
		}
	}
	if pids := vmtest.PIDsUnder(dir); len(pids) > 0 {
		t.Errorf("processes left behind by a failed start: %v", pids)
	}
}
