package diskless

import (
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/internal/vmtest"
)

// TestQemuTwoClients boots Debian's kernel in QEMU (TCG) with the diskless
// initramfs, its root over NBD from this package's server: client A writes
// a mark, client B on the same image does not see it, and A's mark is
// still there when A boots again. The PXE/DHCP path to the same kernel is
// the netboot service's end-to-end test; here the kernel is given to QEMU
// directly. In QEMU's user network 10.0.2.2 is the host's loopback, where
// the server listens; the guest sends nothing anywhere else.
func TestQemuTwoClients(t *testing.T) {
	if ok, why := vmtest.Root(); !ok {
		t.Skip(why)
	}
	dir := t.TempDir()
	k, mods, err := vmtest.DebianKernelWith("nbd")
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	err = BuildInitramfs(InitramfsConfig{Busybox: "/bin/busybox", NBDClient: "/usr/sbin/nbd-client",
		ModulesDir: k.Modules, Modules: mods}, initrd)
	if err != nil {
		t.Fatal(err)
	}
	rootDir := filepath.Join(dir, "root")
	if err := vmtest.BusyboxRoot(rootDir); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.ext4")
	if err := vmtest.Ext4(rootDir, base, 64); err != nil {
		t.Fatal(err)
	}
	srv, addr := startServer(t, Config{ClientsDir: filepath.Join(dir, "clients"),
		Image: func(net.HardwareAddr) (string, bool) { return base, true }})
	_, port, _ := net.SplitHostPort(addr)

	boot := func(name, mac, write string) string {
		t.Helper()
		console := filepath.Join(dir, name+".console")
		cmd := exec.Command("qemu-system-x86_64", "-machine", "accel=tcg", "-m", "512", "-smp", "1",
			"-display", "none", "-monitor", "none", "-serial", "file:"+console, "-no-reboot",
			"-kernel", k.Vmlinuz, "-initrd", initrd,
			"-append", "console=ttyS0 panic=-1 "+KernelArgs("10.0.2.2:"+port)+" berth.write="+write,
			"-netdev", "user,id=n0",
			"-device", "virtio-net-pci,netdev=n0,mac="+mac)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		out, err := vmtest.WaitFor(console, 4*time.Minute, []string{"berth-initramfs: dropping", "Kernel panic"}, "BERTH-READY")
		if err != nil {
			t.Fatalf("%s: %v\nconsole:\n%s", name, err, tail(out, 3000))
		}
		for _, l := range strings.Split(out, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "BERTH-MARKS:"); ok {
				// vmtest's root ends the list with END.
				return strings.Join(slices.DeleteFunc(strings.Fields(rest), func(f string) bool { return f == "END" }), " ")
			}
		}
		t.Fatalf("%s: no BERTH-MARKS line:\n%s", name, tail(out, 3000))
		return ""
	}
	const macA, macB = "52:54:00:be:00:0a", "52:54:00:be:00:0b"
	if got := boot("a1", macA, "first-of-a"); got != "first-of-a" {
		t.Errorf("A's first boot sees marks %q, want only first-of-a", got)
	}
	if got := boot("b1", macB, "first-of-b"); got != "first-of-b" {
		t.Errorf("B sees marks %q, want only its own first-of-b", got)
	}
	if got := boot("a2", macA, "second-of-a"); got != "first-of-a second-of-a" {
		t.Errorf("A's second boot sees marks %q, want first-of-a second-of-a", got)
	}
	st := srv.Stats()
	if st.Exports != 3 || st.BytesWritten == 0 || st.Flushes == 0 {
		t.Errorf("stats = %+v", st)
	}
	t.Logf("server: %+v", st)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
