package esp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/internal/kernelsel"
)

// The end-to-end boot test needs root (loop devices) and downloads two
// Debian kernels into bootCache once; it runs under BERTH_TEST_ROOT=1.
const bootCache = "/var/cache/berth-test/boot"

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getenv("BERTH_TEST_ROOT") != "1" {
		t.Skip("needs root, loop devices and QEMU: set BERTH_TEST_ROOT=1 (make test does)")
	}
	needTools(t, "losetup", "sgdisk", "qemu-system-x86_64", "apt-get", "dpkg-deb", "busybox")
}

// debianKernels returns two Debian kernel versions with their vmlinuz in
// the cache, downloading the packages once (apt-get download + dpkg-deb,
// never installed). If the archive offers only one, the second is a copy
// under another version name (logged).
func debianKernels(t *testing.T) (map[string]string, []string) {
	t.Helper()
	if err := os.MkdirAll(bootCache, 0o755); err != nil {
		t.Fatal(err)
	}
	have, _ := filepath.Glob(filepath.Join(bootCache, "boot/vmlinuz-*"))
	if len(have) < 2 {
		out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
		if err != nil || !bytes.Contains(out, []byte("Depends: linux-image-")) {
			run(t, "apt-get", "update", "-qq")
			out = []byte(run(t, "apt-cache", "depends", "linux-image-amd64"))
		}
		m := regexp.MustCompile(`Depends: linux-image-(\d+\.\d+\.\d+-(\d+))-amd64`).FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("cannot find the kernel linux-image-amd64 depends on:\n%s", out)
		}
		newest := m[1]
		var abi int
		fmt.Sscan(m[2], &abi)
		pkgs := []string{"linux-image-" + newest + "-amd64"}
		// An older ABI of the same series, if the archive still has one.
		for older := abi - 1; older > abi-12 && older > 0; older-- {
			name := fmt.Sprintf("linux-image-%s-%d-amd64", strings.TrimSuffix(newest, "-"+m[2]), older)
			if exec.Command("apt-cache", "show", name).Run() == nil {
				pkgs = append(pkgs, name)
				break
			}
		}
		cmd := exec.Command("apt-get", "download", "-q")
		cmd.Args = append(cmd.Args, pkgs...)
		cmd.Dir = bootCache
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apt-get download %v: %v\n%s", pkgs, err, out)
		}
		debs, _ := filepath.Glob(filepath.Join(bootCache, "linux-image-*.deb"))
		for _, d := range debs {
			run(t, "sh", "-c", fmt.Sprintf("dpkg-deb --fsys-tarfile %q | tar -x -C %q ./boot", d, bootCache))
			os.Remove(d)
		}
		have, _ = filepath.Glob(filepath.Join(bootCache, "boot/vmlinuz-*"))
	}
	out := map[string]string{}
	var versions []string
	for _, h := range have {
		v := strings.TrimPrefix(filepath.Base(h), "vmlinuz-")
		out[v] = h
		versions = append(versions, v)
	}
	if len(versions) == 1 {
		t.Logf("only %s is in the archive: using a copy of it as version 0.0.1-1-amd64 for the pin test", versions[0])
		out["0.0.1-1-amd64"] = out[versions[0]]
		versions = append(versions, "0.0.1-1-amd64")
	}
	return out, versions
}

// markerInitrd builds a newc initramfs with busybox and an /init that
// prints the running kernel's version and powers off.
func markerInitrd(t *testing.T) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	init := "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho \"BERTH-BOOT-MARKER $(/bin/busybox uname -r)\"\n/bin/busybox poweroff -f\n"
	var b bytes.Buffer
	ino := 1
	add := func(name string, mode uint32, data []byte, rmaj, rmin int) {
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
		b.WriteString(name + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.Write(data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		ino++
	}
	add("bin", 0o040755, nil, 0, 0)
	add("dev", 0o040755, nil, 0, 0)
	add("proc", 0o040755, nil, 0, 0)
	add("dev/console", 0o020600, nil, 5, 1)
	add("bin/busybox", 0o100755, bb, 0, 0)
	add("init", 0o100755, []byte(init), 0, 0)
	add("TRAILER!!!", 0, nil, 0, 0)
	return b.Bytes()
}

// loopDisk makes a GPT disk image (BIOS boot 1M, ESP 512M, root) with
// sgdisk and attaches it with losetup -P; it returns the image and the
// ESP's device node.
func loopDisk(t *testing.T, dir, name string) (img, loop string) {
	t.Helper()
	img = filepath.Join(dir, name+".img")
	run(t, "truncate", "-s", "600M", img)
	run(t, "sgdisk", "-o", "-n1:0:+1M", "-t1:EF02", "-n2:0:+512M", "-t2:EF00", "-n3:0:0", "-t3:8300", img)
	return img, attach(t, img)
}

func attach(t *testing.T, img string) string {
	t.Helper()
	loop := strings.TrimSpace(run(t, "losetup", "-P", "--show", "-f", img))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(loop + "p2"); err == nil {
			return loop
		}
		if i == 10 {
			// Some kernels skip the scan of losetup -P; ask again.
			exec.Command("partx", "-a", loop).Run()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%sp2 did not appear", loop)
	return ""
}

// bootQEMU boots the disks with OVMF under TCG and returns the kernel
// version the marker initrd printed.
func bootQEMU(t *testing.T, disks ...string) string {
	t.Helper()
	return bootFirmware(t, true, disks...)
}

// bootFirmware boots with OVMF (uefi) or QEMU's SeaBIOS (legacy BIOS).
func bootFirmware(t *testing.T, uefi bool, disks ...string) string {
	t.Helper()
	args := []string{"-machine", "q35", "-m", "512", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"}
	if uefi {
		vars := filepath.Join(t.TempDir(), "vars.fd")
		copyFile(t, vars, "/usr/share/OVMF/OVMF_VARS_4M.fd")
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,file="+vars)
	}
	for _, d := range disks {
		args = append(args, "-drive", "format=raw,if=virtio,file="+d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var log bytes.Buffer
	sc := bufio.NewScanner(io.TeeReader(out, &log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	re := regexp.MustCompile(`BERTH-BOOT-MARKER (\S+)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			t.Logf("QEMU (uefi=%v) booted %v: %s", uefi, disks, m[0])
			return m[1]
		}
	}
	t.Fatalf("no boot marker (err %v); serial output:\n%s", ctx.Err(), tail(log.String(), 3000))
	return ""
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// berth builds the berth binary once per test.
func berthBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "berth")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/berthhq/berth/cmd/berth").CombinedOutput()
	if err != nil {
		t.Fatalf("go build berth: %v\n%s", err, out)
	}
	return bin
}

type berthCmd struct {
	t    *testing.T
	bin  string
	root string
}

func (b berthCmd) run(wantCode int, args ...string) (string, string) {
	b.t.Helper()
	cmd := exec.Command(b.bin, append([]string{"boot", "--root", b.root}, args...)...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatal(err)
	}
	if code != wantCode {
		b.t.Fatalf("berth boot %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, so.String(), se.String())
	}
	return so.String(), se.String()
}

// bootTest is a root tree with two Debian kernels and the marker initrd,
// and the berth binary to manage it.
type bootTest struct {
	b             berthCmd
	dir, root     string
	initrd        []byte
	versions      []string
	newest, older string
}

func newBootTest(t *testing.T) bootTest {
	t.Helper()
	kernels, versions := debianKernels(t)
	bt := bootTest{dir: t.TempDir(), initrd: markerInitrd(t), versions: versions}
	bt.root = filepath.Join(bt.dir, "root")
	for _, v := range versions {
		copyFile(t, bt.root+"/boot/vmlinuz-"+v, kernels[v])
		write(t, bt.root+"/boot/initrd.img-"+v, string(bt.initrd))
	}
	write(t, bt.root+"/etc/kernel/cmdline", "root=/dev/vda3 console=ttyS0 quiet panic=-1\n")
	bt.newest, bt.older = versions[0], versions[1]
	if kernelsel.Compare(bt.older, bt.newest) > 0 {
		bt.newest, bt.older = bt.older, bt.newest
	}
	bt.b = berthCmd{t, berthBinary(t), bt.root}
	return bt
}

// TestBootUEFI is the end-to-end test of `berth boot`: a GPT disk on a
// loop device, format + init + two Debian kernels with a marker initrd,
// booted with OVMF in QEMU (TCG): the newest by default, a pinned one,
// a next-boot pin exactly once, then a mirrored pair with one ESP
// destroyed still boots and status names the broken ESP. It also kills
// refresh (SIGKILL) at several points and checks the ESP each time.
func TestBootUEFI(t *testing.T) {
	needRoot(t)
	bt := newBootTest(t)
	b, dir, root, initrd, versions := bt.b, bt.dir, bt.root, bt.initrd, bt.versions
	newest, older := bt.newest, bt.older
	img1, loop1 := loopDisk(t, dir, "disk1")
	b.run(0, "format", loop1+"p2")
	b.run(0, "init", loop1+"p2", "systemd-boot")
	b.run(0, "refresh")
	out, _ := b.run(0, "status")
	if !strings.Contains(out, "is configured with: uefi (versions: ") {
		t.Fatalf("status after init:\n%s", out)
	}
	sync := func() { run(t, "blockdev", "--flushbufs", loop1) }
	sync()
	if got := bootQEMU(t, img1); got != newest {
		t.Fatalf("default boot: %s, want the newest %s", got, newest)
	}
	b.run(0, "kernel", "pin", older)
	b.run(0, "refresh")
	sync()
	if got := bootQEMU(t, img1); got != older {
		t.Fatalf("after pin %s booted %s", older, got)
	}
	b.run(0, "kernel", "pin", newest, "--next-boot")
	b.run(0, "refresh")
	sync()
	if got := bootQEMU(t, img1); got != newest {
		t.Fatalf("next-boot pin %s: booted %s", newest, got)
	}
	// What berth-boot-cleanup.service runs at that boot:
	unit := HookFiles(b.bin)[CleanupUnit]
	for _, l := range strings.Split(unit, "\n") {
		if cmd, ok := strings.CutPrefix(l, "ExecStart="+b.bin+" boot "); ok {
			b.run(0, strings.Fields(cmd)...)
		}
	}
	sync()
	if got := bootQEMU(t, img1); got != older {
		t.Fatalf("second boot after a next-boot pin: %s, want the permanent pin %s", got, older)
	}

	// SIGKILL refresh at several points of a change; the ESP must stay
	// consistent (fsck.fat) and boot, and the next refresh must finish.
	p1, err := New("/", io.Discard, io.Discard, nil).FindPartition(loop1 + "p2")
	if err != nil {
		t.Fatal(err)
	}
	for i, at := range []int{1, 2, 3, 5, 8} {
		// Each round regenerates both initrds and changes the command
		// line: 8 changes per ESP (2 files and 2 entries, each written
		// and renamed).
		for _, v := range versions {
			write(t, root+"/boot/initrd.img-"+v, string(initrd)+strings.Repeat("\x00", 512*(at+1)))
		}
		write(t, root+"/etc/kernel/cmdline", fmt.Sprintf("root=/dev/vda3 console=ttyS0 quiet panic=-1 berth.round=%d\n", i))
		cmd := exec.Command(b.bin, "boot", "--root", root, "refresh")
		cmd.Env = append(os.Environ(), fmt.Sprintf("BERTH_BOOT_TEST_KILL_AT=%d", at))
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
			t.Fatalf("kill at %d: %v\n%s", at, err, out)
		}
		fsck(t, loop1, p1)
		if at == 3 {
			// Boot the interrupted state itself: one kernel's initrd is
			// already replaced, the other's and the entries are not.
			sync()
			if got := bootQEMU(t, img1); got != older {
				t.Fatalf("ESP killed before step %d booted %s, want %s", at, got, older)
			}
		}
		b.run(0, "refresh")
		fsck(t, loop1, p1)
	}
	// The mirror boot below boots the state the last recovery left.

	// A mirrored pair: the second ESP joins; then the first is destroyed.
	img2, loop2 := loopDisk(t, dir, "disk2")
	b.run(0, "format", loop2+"p2")
	b.run(0, "init", loop2+"p2", "systemd-boot")
	out, _ = b.run(0, "status")
	if strings.Count(out, "is configured with: uefi") != 2 {
		t.Fatalf("status with two ESPs:\n%s", out)
	}
	zero := make([]byte, 4<<20)
	fh, err := os.OpenFile(loop1, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt(zero, p1.Start); err != nil {
		t.Fatal(err)
	}
	fh.Sync()
	fh.Close()
	run(t, "blockdev", "--flushbufs", loop2)
	_, errOut := b.run(1, "status")
	if !strings.Contains(errOut, p1.UUID) {
		t.Fatalf("status does not name the broken ESP %s:\n%s", p1.UUID, errOut)
	}
	_, errOut = b.run(1, "refresh")
	if !strings.Contains(errOut, p1.UUID) {
		t.Fatalf("refresh does not name the broken ESP %s:\n%s", p1.UUID, errOut)
	}
	sync()
	if got := bootQEMU(t, img1, img2); got != older {
		t.Fatalf("mirror with a broken first ESP booted %s, want %s", got, older)
	}
}

// TestBootGrub boots a GRUB-mode ESP (init PARTITION grub) twice: with
// OVMF through the standalone grubx64.efi (pinned kernel), and, after
// unpin and refresh, with SeaBIOS through the core berth embedded in the
// BIOS boot partition (newest kernel); both read the same grub.cfg.
func TestBootGrub(t *testing.T) {
	needRoot(t)
	needTools(t, "grub-mkimage")
	bt := newBootTest(t)
	b, newest, older := bt.b, bt.newest, bt.older
	img, loop := loopDisk(t, bt.dir, "disk")
	b.run(0, "format", loop+"p2")
	b.run(0, "kernel", "pin", older)
	out, _ := b.run(0, "init", loop+"p2", "grub")
	if !strings.Contains(out, "Installing grub i386-pc target") {
		t.Fatalf("init grub did not set up legacy boot:\n%s", out)
	}
	out, _ = b.run(0, "status")
	if !strings.Contains(out, "is configured with: grub (versions: ") {
		t.Fatalf("status:\n%s", out)
	}
	run(t, "blockdev", "--flushbufs", loop)
	if got := bootFirmware(t, true, img); got != older {
		t.Fatalf("UEFI GRUB booted %s, want the pinned %s", got, older)
	}
	b.run(0, "kernel", "unpin")
	b.run(0, "refresh")
	run(t, "blockdev", "--flushbufs", loop)
	if got := bootFirmware(t, false, img); got != newest {
		t.Fatalf("BIOS GRUB after unpin booted %s, want the newest %s", got, newest)
	}
}
