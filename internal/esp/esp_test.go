package esp

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berthhq/berth/internal/fat"
	"github.com/berthhq/berth/internal/gpt"
)

// readESP opens the ESP of p for assertions.
func readESP(t testing.TB, p Partition) *fat.FS {
	t.Helper()
	f, err := os.Open(p.DiskPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fsys, err := fat.Open(f, p.Start)
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

func names(t testing.TB, fsys *fat.FS, dir string) []string {
	t.Helper()
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	return out
}

func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// newESP makes a disk with a BIOS boot partition, an ESP and a root
// partition, formats and initialises the ESP in systemd-boot mode.
func newESP(t testing.TB, f *fixture, disk string, espMiB int) Partition {
	t.Helper()
	f.disk(t, disk, espMiB+8, "1M:EF02", itoa(espMiB)+"M:EF00", "rest:8300")
	tl := f.tool(t)
	arg := filepath.Join(f.dev, disk+"p2")
	if err := tl.Format(context.Background(), arg, espMiB < 256); err != nil {
		t.Fatalf("Format: %v\n%s", err, f.stderr.String())
	}
	if err := tl.Init(context.Background(), arg, ModeSystemdBoot, espMiB < 256, false); err != nil {
		t.Fatalf("Init: %v\n%s", err, f.stderr.String())
	}
	return f.part(t, disk+"p2")
}

func itoa(n int) string { return fmtInt(n) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func TestFormatInitRefresh(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	p := newESP(t, f, "loop0", 260)
	if p.FSType != "vfat" || p.UUID == "" || p.Type != "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" {
		t.Fatalf("after format: %+v", p)
	}
	fsck(t, p.DiskPath, p)
	uuids, err := f.tool(t).UUIDs()
	if err != nil || !cmp.Equal(uuids, []string{p.UUID}) {
		t.Fatalf("UUIDs = %v, %v; want [%s]", uuids, err, p.UUID)
	}
	fsys := readESP(t, p)
	for _, want := range []string{"EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI", "loader/loader.conf", "loader/entries.srel"} {
		if _, err := fsys.Stat(want); err != nil {
			t.Errorf("after init: %s: %v", want, err)
		}
	}

	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64", "5.10.0-20-amd64"} {
		f.kernel(t, v, 40000)
	}
	tl := f.tool(t)
	if err := tl.Refresh(ctx, ""); err != nil {
		t.Fatalf("Refresh: %v\n%s", err, f.stderr.String())
	}
	fsck(t, p.DiskPath, p)
	fsys = readESP(t, p)
	// Two newest, the newest of the previous series; not 5.10.0-20.
	want := []string{"5.10.0-30-amd64", "6.1.0-10-amd64", "6.1.0-9-amd64"}
	got := names(t, fsys, "EFI/proxmox")
	if diff := cmp.Diff(sorted(got), want); diff != "" {
		t.Errorf("EFI/proxmox mismatch (-got +want):\n%s", diff)
	}
	entry, err := fsys.ReadFile("loader/entries/proxmox-6.1.0-10-amd64.conf")
	if err != nil {
		t.Fatal(err)
	}
	wantEntry := "title    Proxmox Virtual Environment\nversion  6.1.0-10-amd64\noptions  root=/dev/vda3 console=ttyS0\nlinux    /EFI/proxmox/6.1.0-10-amd64/vmlinuz-6.1.0-10-amd64\ninitrd   /EFI/proxmox/6.1.0-10-amd64/initrd.img-6.1.0-10-amd64\n"
	if diff := cmp.Diff(string(entry), wantEntry); diff != "" {
		t.Errorf("entry mismatch (-got +want):\n%s", diff)
	}
	k, err := fsys.ReadFile("EFI/proxmox/6.1.0-9-amd64/vmlinuz-6.1.0-9-amd64")
	if err != nil || sha256.Sum256(k) != fileHash(t, f.root+"/boot/vmlinuz-6.1.0-9-amd64") {
		t.Errorf("kernel on ESP differs from /boot (err %v)", err)
	}
	lc, _ := fsys.ReadFile("loader/loader.conf")
	if string(lc) != "timeout 3\ndefault proxmox-*\n" {
		t.Errorf("loader.conf = %q", lc)
	}

	// Nothing changed: nothing is written, not one byte of the image.
	before := fileHash(t, p.DiskPath)
	tl = f.tool(t)
	if err := tl.Refresh(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if tl.Stats.Ops != 0 || tl.Stats.Bytes != 0 || fileHash(t, p.DiskPath) != before {
		t.Errorf("no-op refresh wrote: %+v (image changed: %v)", tl.Stats, fileHash(t, p.DiskPath) != before)
	}

	// Pin, then next-boot pin over it, then unpin next-boot.
	for _, step := range []struct {
		do   func(*Tool) error
		want string
	}{
		{func(tl *Tool) error { return tl.KernelPin("6.1.0-9-amd64", false) }, "default proxmox-6.1.0-9-amd64.conf"},
		{func(tl *Tool) error { return tl.KernelPin("5.10.0-20-amd64", true) }, "default proxmox-5.10.0-20-amd64.conf"},
		{func(tl *Tool) error { return tl.KernelUnpin(true) }, "default proxmox-6.1.0-9-amd64.conf"},
		{func(tl *Tool) error { return tl.KernelUnpin(false) }, "default proxmox-*"},
	} {
		tl := f.tool(t)
		if err := step.do(tl); err != nil {
			t.Fatal(err)
		}
		if err := tl.Refresh(ctx, ""); err != nil {
			t.Fatal(err)
		}
		lc, _ := readESP(t, p).ReadFile("loader/loader.conf")
		if !strings.Contains(string(lc), step.want+"\n") {
			t.Errorf("loader.conf = %q, want line %q", lc, step.want)
		}
	}
	// The next-boot pin kept 5.10.0-20 while set; after unpin it is gone.
	if got := names(t, readESP(t, p), "EFI/proxmox"); len(got) != 3 {
		t.Errorf("after unpin: %v", got)
	}

	// A removed kernel disappears with its entry; a regenerated initrd is
	// replaced.
	os.Remove(f.root + "/boot/vmlinuz-6.1.0-10-amd64")
	write(t, f.root+"/boot/initrd.img-6.1.0-9-amd64", "regenerated")
	if err := f.tool(t).Refresh(ctx, ""); err != nil {
		t.Fatal(err)
	}
	fsys = readESP(t, p)
	if got := sorted(names(t, fsys, "EFI/proxmox")); !cmp.Equal(got, []string{"5.10.0-30-amd64", "6.1.0-9-amd64"}) {
		t.Errorf("after removing 6.1.0-10: %v", got)
	}
	if _, err := fsys.Stat("loader/entries/proxmox-6.1.0-10-amd64.conf"); err == nil {
		t.Error("stale entry left behind")
	}
	if b, _ := fsys.ReadFile("EFI/proxmox/6.1.0-9-amd64/initrd.img-6.1.0-9-amd64"); string(b) != "regenerated" {
		t.Errorf("initrd not replaced: %q", b)
	}
	fsck(t, p.DiskPath, p)

	r, err := f.tool(t).Status()
	if err != nil || len(r.ESPs) != 1 || !r.ESPs[0].InSync || r.ESPs[0].Mode != ModeSystemdBoot {
		t.Fatalf("Status = %+v, %v", r, err)
	}
}

// fingerprint hashes the parts of a disk image a format or init would
// change: the first and last MiB (the GPTs) and the first 4 MiB of every
// partition (boot sectors, FATs, superblocks).
func fingerprint(t testing.TB, img string) [32]byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := gpt.Read(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	offs := []int64{0, st.Size() - 1<<20}
	for _, p := range tab.Partitions {
		offs = append(offs, int64(p.FirstLBA)*512)
	}
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for _, off := range offs {
		n, _ := f.ReadAt(buf, off)
		h.Write(buf[:n])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	f.disk(t, "loop0", 700, "1M:EF02", "100M:EF00", "300M:8300", "270M:EF00")
	ext4 := f.part(t, "loop0p3")
	// An ext4 superblock magic at 1080 makes the root partition look used.
	fh, _ := os.OpenFile(f.disks["loop0"], os.O_RDWR, 0)
	fh.WriteAt([]byte{0x53, 0xef}, ext4.Start+0x438)
	fh.Close()
	mounted := f.part(t, "loop0p4")
	write(t, f.proc+"/self/mountinfo", "30 1 259:4 / /boot/efi rw,relatime - vfat /dev/loop0p4 rw\n")
	_ = mounted
	ctx := context.Background()
	tests := []struct {
		name, arg, want string
		init            bool
	}{
		{"missing partition", "loop0p9", "does not exist", false},
		{"whole disk", "loop0", "please provide a partition, not a full disk", false},
		{"too small", "loop0p2", "is too small (<256M)", false},
		{"wrong type", "loop0p3", "not an EFI system partition", false},
		{"holds a filesystem", "loop0p3", "contains a filesystem ('ext4')", false},
		{"mounted", "loop0p4", "is mounted on '/boot/efi'", false},
		{"init: wrong type", "loop0p3", "has wrong partition type", true},
		{"init: not vfat", "loop0p3", "has wrong filesystem (!= vfat)", true},
		{"init: too small", "loop0p2", "is too small", true},
	}
	before := fingerprint(t, f.disks["loop0"])
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := f.tool(t)
			var err error
			if tt.init {
				err = tl.Init(ctx, filepath.Join(f.dev, tt.arg), "", false, false)
			} else {
				err = tl.Format(ctx, filepath.Join(f.dev, tt.arg), false)
			}
			if err == nil || !IsInput(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want an input error containing %q", err, tt.want)
			}
			if !strings.HasPrefix(tt.name, "missing") && !strings.HasPrefix(tt.name, "whole") && !strings.Contains(err.Error(), "--force") {
				t.Errorf("refusal does not say how to override: %v", err)
			}
			if fingerprint(t, f.disks["loop0"]) != before {
				t.Fatal("a refused command changed the disk")
			}
			if _, err := os.Stat(f.root + "/" + UUIDsFile); err == nil {
				t.Fatal("a refused command wrote the ESP list")
			}
		})
	}
	// --force overrides: the ext4 partition of type 8300 becomes an ESP.
	tl := f.tool(t)
	if err := tl.Format(ctx, filepath.Join(f.dev, "loop0p3"), true); err != nil {
		t.Fatalf("Format --force: %v", err)
	}
	f.rescan(t, "loop0")
	p := f.part(t, "loop0p3")
	if p.Type != "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" || p.FSType != "vfat" {
		t.Errorf("after format --force: type %s fs %s", p.Type, p.FSType)
	}
	fsck(t, p.DiskPath, p)
}

func TestMirroredESPOneBroken(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := newESP(t, f, "loop0", 64)
	b := newESP(t, f, "loop1", 64)
	f.kernel(t, "6.1.0-9-amd64", 5000)
	if err := f.tool(t).Refresh(ctx, ""); err != nil {
		t.Fatal(err)
	}
	// Destroy b's first FAT: its files can no longer be followed.
	fh, _ := os.OpenFile(b.DiskPath, os.O_RDWR, 0)
	fs := readESP(t, b)
	zero := make([]byte, int(fs.FATSectors)*fs.BytesPerSector)
	for i := range zero {
		zero[i] = 0xF7 // bad-cluster markers everywhere
	}
	fh.WriteAt(zero, b.Start+int64(fs.ReservedSectors*fs.BytesPerSector))
	fh.Close()
	r, err := f.tool(t).Status()
	if err != nil {
		t.Fatal(err)
	}
	byUUID := map[string]ESPReport{}
	for _, e := range r.ESPs {
		byUUID[e.UUID] = e
	}
	if !byUUID[a.UUID].InSync || byUUID[b.UUID].InSync || byUUID[b.UUID].Error == "" {
		t.Fatalf("status: a=%+v b=%+v", byUUID[a.UUID], byUUID[b.UUID])
	}
	tl := f.tool(t)
	tl.PrintStatus(r)
	if !strings.Contains(f.stderr.String(), "E: ESP "+b.UUID) {
		t.Errorf("status does not name the broken ESP %s:\n%s", b.UUID, f.stderr.String())
	}
	// Refresh still syncs the good one and fails naming the bad one.
	f.kernel(t, "6.1.0-10-amd64", 5000)
	err = f.tool(t).Refresh(ctx, "")
	if err == nil || !strings.Contains(err.Error(), b.UUID) {
		t.Fatalf("Refresh with a broken ESP: %v", err)
	}
	if got := names(t, readESP(t, a), "EFI/proxmox"); len(got) != 2 {
		t.Errorf("good ESP not synced: %v", got)
	}
}

func TestGrubMode(t *testing.T) {
	needTools(t, "grub-mkimage")
	if _, err := os.Stat(GrubEFIModules); err != nil {
		t.Skip("grub-efi-amd64-bin not installed")
	}
	f := newFixture(t)
	ctx := context.Background()
	f.disk(t, "loop0", 72, "1M:EF02", "64M:EF00")
	arg := filepath.Join(f.dev, "loop0p2")
	tl := f.tool(t)
	if err := tl.Format(ctx, arg, true); err != nil {
		t.Fatal(err)
	}
	f.kernel(t, "6.1.0-9-amd64", 3000)
	f.kernel(t, "6.1.0-10-amd64", 3000)
	if err := tl.KernelPin("6.1.0-9-amd64", false); err != nil {
		t.Fatal(err)
	}
	if err := f.tool(t).Init(ctx, arg, ModeGrub, true, true); err != nil {
		t.Fatalf("Init grub: %v\n%s", err, f.stderr.String())
	}
	p := f.part(t, "loop0p2")
	fsys := readESP(t, p)
	cfg, err := fsys.ReadFile("grub/grub.cfg")
	if err != nil {
		t.Fatal(err)
	}
	want := GrubCfg("Proxmox Virtual Environment", p.UUID, "root=/dev/vda3 console=ttyS0", "6.1.0-9-amd64", []string{"6.1.0-10-amd64", "6.1.0-9-amd64"})
	if diff := cmp.Diff(string(cfg), want); diff != "" {
		t.Errorf("grub.cfg mismatch (-got +want):\n%s", diff)
	}
	for _, n := range []string{"EFI/proxmox/grubx64.efi", "EFI/BOOT/BOOTX64.EFI", "vmlinuz-6.1.0-10-amd64", "initrd.img-6.1.0-9-amd64"} {
		if _, err := fsys.Stat(n); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	r, _ := f.tool(t).Status()
	if r.ESPs[0].Mode != ModeGrub || !r.ESPs[0].InSync {
		t.Errorf("status: %+v", r.ESPs[0])
	}
	// reinit keeps GRUB.
	if err := f.tool(t).Reinit(ctx); err != nil {
		t.Fatal(err)
	}
	if m := func() string { v, _ := f.tool(t).open(p); defer v.close(); return v.mode() }(); m != ModeGrub {
		t.Errorf("after reinit mode = %s", m)
	}
	fsck(t, p.DiskPath, p)
}

func TestCleanAndKernelList(t *testing.T) {
	f := newFixture(t)
	p := newESP(t, f, "loop0", 64)
	write(t, f.root+"/"+UUIDsFile, p.UUID+"\nDEAD-BEEF\nnot-a-uuid\n")
	tl := f.tool(t)
	if err := tl.Clean(true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(f.root + "/" + UUIDsFile); !strings.Contains(string(b), "DEAD-BEEF") {
		t.Error("dry run changed the list")
	}
	if err := tl.Clean(false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(f.root + "/" + UUIDsFile); string(b) != p.UUID+"\n" {
		t.Errorf("after clean: %q", b)
	}
	if err := tl.KernelAdd("9.9.9"); err == nil || !IsInput(err) {
		t.Errorf("KernelAdd of a missing kernel: %v", err)
	}
	f.kernel(t, "6.1.0-9-amd64", 100)
	f.kernel(t, "4.19.0-1-amd64", 100)
	f.stdout.Reset()
	if err := tl.KernelAdd("4.19.0-1-amd64"); err != nil {
		t.Fatal(err)
	}
	if err := tl.KernelPin("6.1.0-9-amd64", true); err != nil {
		t.Fatal(err)
	}
	f.stdout.Reset()
	tl.KernelList()
	want := "Manually selected kernels:\n4.19.0-1-amd64\n\nAutomatically selected kernels:\n6.1.0-9-amd64\n\nKernel pinned on next-boot:\n6.1.0-9-amd64\n"
	if diff := cmp.Diff(f.stdout.String(), want); diff != "" {
		t.Errorf("kernel list mismatch (-got +want):\n%s", diff)
	}
	if err := tl.KernelRemove("4.19.0-1-amd64"); err != nil {
		t.Fatal(err)
	}
	if len(tl.Manual()) != 0 {
		t.Errorf("manual list after remove: %v", tl.Manual())
	}
	if _, err := f.tool(t).Status(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.root + "/" + UUIDsFile); err != nil {
		t.Fatal(err)
	}
	if _, err := f.tool(t).UUIDs(); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("UUIDs without a list: %v", err)
	}
}

func TestInstallHooks(t *testing.T) {
	f := newFixture(t)
	tl := f.tool(t)
	if err := tl.InstallHooks("relative/berth"); err == nil {
		t.Error("relative binary path accepted")
	}
	if err := tl.InstallHooks("/usr/bin/berth"); err != nil {
		t.Fatal(err)
	}
	for rel, body := range HookFiles("/usr/bin/berth") {
		st, err := os.Stat(filepath.Join(f.root, rel))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(f.root, rel))
		if string(b) != body {
			t.Errorf("%s content differs", rel)
		}
		if !strings.HasSuffix(rel, ".service") && st.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", rel)
		}
	}
	if l, err := os.Readlink(filepath.Join(f.root, cleanupUnitWant)); err != nil || l != "/"+CleanupUnit {
		t.Errorf("unit not enabled: %q %v", l, err)
	}
	// Idempotent.
	if err := f.tool(t).InstallHooks("/usr/bin/berth"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(HookFiles("/usr/bin/berth")[CleanupUnit], "ExecStart=/usr/bin/berth boot kernel unpin --next-boot\nExecStart=/usr/bin/berth boot refresh\n") {
		t.Error("cleanup unit does not unpin and refresh")
	}
}

func TestStatusFirmware(t *testing.T) {
	f := newFixture(t)
	ev := f.sys + "/firmware/efi/efivars/"
	guid := "-8be4df61-93ca-11d2-aa0d-00e098032b8c"
	write(t, ev+"SecureBoot"+guid, "\x06\x00\x00\x00\x01")
	write(t, ev+"BootCurrent"+guid, "\x06\x00\x00\x00\x01\x00")
	write(t, ev+"BootOrder"+guid, "\x06\x00\x00\x00\x01\x00\x00\x00")
	r, err := f.tool(t).Status()
	if err != nil {
		t.Fatal(err)
	}
	if r.BootMode != "efi" || !r.SecureBoot || r.Configured || r.Firmware == nil || r.Firmware.BootCurrent != 1 {
		t.Errorf("status on an EFI host: %+v firmware %+v", r, r.Firmware)
	}
	w := r.Wire()
	if w.BootMode != "efi" || !w.SecureBoot || !cmp.Equal(w.BootOrder, []int{1, 0}) || w.ESPs == nil {
		t.Errorf("wire: %+v", w)
	}
	os.RemoveAll(f.sys + "/firmware")
	if r, _ := f.tool(t).Status(); r.BootMode != "bios" || r.SecureBoot {
		t.Errorf("status on a BIOS host: %+v", r)
	}
}
