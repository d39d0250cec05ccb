package netboot_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/cli"
	"github.com/berthhq/berth/internal/netboot/diskless"
	"github.com/berthhq/berth/internal/syncbuf"
	"github.com/berthhq/berth/internal/vmtest"
)

// TestMain lets the test binary act as the berth command (daemon and
// CLI) when BERTH_E2E_BERTH=1, so the end-to-end test runs the real
// `berth serve` under `ip netns exec` without building a binary first.
func TestMain(m *testing.M) {
	if os.Getenv("BERTH_E2E_BERTH") == "1" {
		os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// rig is a berth daemon serving network boot inside a network namespace
// with a bridge (br0, 10.78.0.1/24) and one tap for QEMU.
type rig struct {
	t    testing.TB
	ns   string
	data string
	root string
	log  *syncbuf.Buffer
}

func (r *rig) berth(args ...string) string {
	r.t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "BERTH_E2E_BERTH=1", "BERTH_DATA_DIR="+r.data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, ns: fmt.Sprintf("berth-e2e-%d", os.Getpid()), data: t.TempDir(), log: &syncbuf.Buffer{}}
	r.root = filepath.Join(r.data, "netboot", "root")
	ip(t, "netns", "add", r.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", r.ns).Run() })
	ip(t, "-n", r.ns, "link", "set", "lo", "up")
	ip(t, "-n", r.ns, "link", "add", "br0", "type", "bridge")
	ip(t, "-n", r.ns, "addr", "add", "10.78.0.1/24", "dev", "br0")
	ip(t, "-n", r.ns, "link", "set", "br0", "up")
	ip(t, "-n", r.ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	ip(t, "-n", r.ns, "link", "set", "tap0", "master", "br0", "up")

	cmd := exec.Command("ip", "netns", "exec", r.ns, os.Args[0], "serve", "--listen", "none", "--data-dir", r.data, "--node", "e2e")
	cmd.Env = append(os.Environ(), "BERTH_E2E_BERTH=1")
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", r.log.String())
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(r.data, "berth.sock")); err == nil {
			break
		}
		if i > 600 {
			t.Fatalf("daemon did not start within 60 s:\n%s", r.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

// boot runs QEMU (TCG, Debian's iPXE ROM for virtio-net) booting from
// the network until the root's BERTH-READY marker, and returns the marks
// the root saw and how long the boot took.
func (r *rig) boot(name, mac string) (string, time.Duration) {
	r.t.Helper()
	out, took := r.bootTo(name, mac, "BERTH-READY")
	for _, l := range strings.Split(out, "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(l), "BERTH-MARKS:"); ok {
			return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(m), "END")), took
		}
	}
	r.t.Fatalf("%s: no BERTH-MARKS line:\n%s", name, tailStr(out, 4000))
	return "", 0
}

// bootTo boots QEMU from the network until marker shows on its serial
// console and returns the console and the time from QEMU's start.
func (r *rig) bootTo(name, mac, marker string) (string, time.Duration) {
	r.t.Helper()
	console := filepath.Join(r.data, name+".console")
	os.Remove(console)
	start := time.Now()
	cmd := exec.Command("ip", "netns", "exec", r.ns, "qemu-system-x86_64", "-machine", "accel=tcg", "-m", "512", "-smp", "1",
		"-display", "none", "-monitor", "none", "-serial", "file:"+console, "-no-reboot", "-boot", "n",
		"-nic", "tap,ifname=tap0,script=no,downscript=no,model=virtio-net-pci,mac="+mac)
	var qout syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &qout, &qout
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	out, err := vmtest.WaitFor(console, 5*time.Minute, []string{"berth-initramfs: dropping", "Kernel panic", "No more network devices"}, marker)
	if err != nil {
		r.t.Fatalf("%s: %v\nqemu: %s\nconsole:\n%s", name, err, qout.String(), tailStr(out, 4000))
	}
	return out, time.Since(start)
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// newDisklessRig starts a rig (skipping without root or the tools) and
// puts what a diskless client boots into its boot root: Debian's kernel
// (vmlinuz, also returned), the diskless initramfs (initrd.img, with
// klibc's ipconfig when ipconfig is set) and the shared busybox root
// image images/base.img.
// needBoot skips the test unless root tests are enabled and QEMU, the
// tools every network boot test uses and the extra tools are installed.
func needBoot(t *testing.T, extra ...string) {
	t.Helper()
	if ok, why := vmtest.Root(); !ok {
		t.Skip(why)
	}
	for _, tool := range append([]string{"ip", "qemu-system-x86_64", "busybox", "cpio"}, extra...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (make deps installs deps/*.debs)", tool)
		}
	}
}

// newMarkerRig is a rig for boots to a marker initramfs: it needs the
// tools, and puts Debian's kernel into the boot root as vmlinuz.
func newMarkerRig(t *testing.T, extraTools ...string) *rig {
	t.Helper()
	needBoot(t, extraTools...)
	k, err := vmtest.DebianKernel()
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t)
	copyFile(t, k.Vmlinuz, filepath.Join(r.root, "vmlinuz"))
	return r
}

func newDisklessRig(t *testing.T, ipconfig string) (*rig, vmtest.Kernel) {
	t.Helper()
	tools := []string{"mkfs.ext4", "/usr/sbin/nbd-client"}
	if ipconfig != "" {
		tools = append(tools, ipconfig)
	}
	needBoot(t, tools...)
	k, mods, err := vmtest.DebianKernelWith("nbd")
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t)
	copyFile(t, k.Vmlinuz, filepath.Join(r.root, "vmlinuz"))
	if err := diskless.BuildInitramfs(diskless.InitramfsConfig{Busybox: "/bin/busybox", NBDClient: "/usr/sbin/nbd-client",
		IPConfig: ipconfig, ModulesDir: k.Modules, Modules: mods}, filepath.Join(r.root, "initrd.img")); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(t.TempDir(), "tree")
	if err := vmtest.BusyboxRoot(tree); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(r.root, "images"), 0o755)
	if err := vmtest.Ext4(tree, filepath.Join(r.root, "images", "base.img"), 64); err != nil {
		t.Fatal(err)
	}
	return r, k
}

// TestEndToEndBoot boots QEMU machines over the network from a real berth
// daemon in a network namespace: DHCP from berth's pool, then either the
// host's iPXE script over HTTP (client A) or a boot file over TFTP that
// loads the kernel over HTTP (client B), Debian's kernel and the diskless
// initramfs, and the root over NBD from berth: a shared image with a
// per-client writable layer. B does not see A's writes; A's writes are
// still there when A boots again.
func TestEndToEndBoot(t *testing.T) {
	r, _ := newDisklessRig(t, "")
	// Besides the kernel, initramfs and root image: a TFTP boot script
	// for client B.
	os.WriteFile(filepath.Join(r.root, "client-b.ipxe"), []byte("#!ipxe\n"+
		"kernel http://10.78.0.1:8067/vmlinuz initrd=initrd.img console=ttyS0 panic=-1 berth.write=b1 "+diskless.KernelArgs("10.78.0.1:10809")+"\n"+
		"initrd --name initrd.img http://10.78.0.1:8067/initrd.img\nboot\n"), 0o644)

	const macA, macB = "52:54:00:e2:e0:0a", "52:54:00:e2:e0:0b"
	out := r.berth("netboot", "enable", "--interface", "br0", "--range", "10.78.0.100-10.78.0.150")
	if !strings.Contains(out, "state:") || !strings.Contains(out, "running") {
		t.Fatalf("enable: %s", out)
	}
	r.berth("netboot", "host", "add", macA, "--name", "client-a", "--kernel", "vmlinuz", "--initrd", "initrd.img",
		"--cmdline", "console=ttyS0 panic=-1 berth.write=a1", "--root", "base")
	r.berth("netboot", "host", "add", macB, "--name", "client-b", "--bootfile", "client-b.ipxe", "--root", "base")

	marks, took := r.boot("a1", macA)
	t.Logf("client A, first boot (DHCP, HTTP script, HTTP kernel, NBD root): %s to marker", took.Round(100*time.Millisecond))
	if marks != "a1" {
		t.Errorf("A's first boot sees marks %q, want a1", marks)
	}
	marks, took = r.boot("b1", macB)
	t.Logf("client B (DHCP, TFTP script, HTTP kernel, NBD root): %s to marker", took.Round(100*time.Millisecond))
	if marks != "b1" {
		t.Errorf("B sees marks %q, want only its own b1", marks)
	}
	r.berth("netboot", "host", "set", macA, "--cmdline", "console=ttyS0 panic=-1 berth.write=a2")
	marks, took = r.boot("a2", macA)
	t.Logf("client A, second boot: %s to marker", took.Round(100*time.Millisecond))
	if marks != "a1 a2" {
		t.Errorf("A's second boot sees marks %q, want a1 a2", marks)
	}

	var st wire.NetbootStatus
	if err := json.Unmarshal([]byte(r.berth("netboot", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("status: %+v", st.Services)
	d, tf, h, nb := st.Services["dhcp"], st.Services["tftp"], st.Services["http"], st.Services["diskless"]
	if d["acks"] < 6 || d["offers"] < 3 || tf["transfers"] < 1 || h["scripts"] < 2 || h["transfers"] < 6 || nb["exports"] != 3 || nb["bytes_written"] == 0 {
		t.Errorf("counters: dhcp %v tftp %v http %v diskless %v", d, tf, h, nb)
	}
	leases := r.berth("netboot", "lease", "list")
	for _, mac := range []string{macA, macB} {
		if !strings.Contains(leases, mac) {
			t.Errorf("lease list lacks %s:\n%s", mac, leases)
		}
		if !strings.Contains(r.log.String(), "msg=\"dhcp ack\"") || !strings.Contains(r.log.String(), "mac="+mac) {
			t.Errorf("daemon log has no boot line for %s", mac)
		}
	}
}

// TestBOOTPBoot boots a BOOTP-only client from berth: Debian's kernel
// (given to QEMU directly: the BOOTP client is in its initramfs) with
// ip=:::::eth0:bootp, which klibc's ipconfig (Debian's initramfs-tools
// client for ip=) turns into BOOTREQUESTs without option 53. berth answers
// from the static host entry with a BOOTP reply (RFC 951/1542): the
// guest prints the address, server, boot file and root path it got, then
// mounts its root over NBD from the server named in the root path.
func TestBOOTPBoot(t *testing.T) {
	r, k := newDisklessRig(t, "/usr/lib/klibc/bin/ipconfig")
	dir := t.TempDir()

	const mac, addr = "52:54:00:e2:e0:b0", "10.78.0.42"
	r.berth("netboot", "enable", "--interface", "br0", "--range", "10.78.0.100-10.78.0.150")
	r.berth("netboot", "host", "add", mac, "--name", "bootp-only", "--ip", addr, "--bootfile", "bootp/vmlinux.nb", "--root", "base")

	console := filepath.Join(dir, "bootp.console")
	start := time.Now()
	cmd := exec.Command("ip", "netns", "exec", r.ns, "qemu-system-x86_64", "-machine", "accel=tcg", "-m", "512", "-smp", "1",
		"-display", "none", "-monitor", "none", "-serial", "file:"+console, "-no-reboot",
		"-kernel", k.Vmlinuz, "-initrd", filepath.Join(r.root, "initrd.img"), "-append", "console=ttyS0 panic=-1 ip=:::::eth0:bootp berth.write=p1",
		"-nic", "tap,ifname=tap0,script=no,downscript=no,model=virtio-net-pci,mac="+mac)
	var qout syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &qout, &qout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	out, err := vmtest.WaitFor(console, 5*time.Minute, []string{"berth-initramfs: dropping", "Kernel panic"}, "BERTH-READY")
	if err != nil {
		t.Fatalf("%v\nqemu: %s\nconsole:\n%s", err, qout.String(), tailStr(out, 4000))
	}
	t.Logf("BOOTP client: %s to marker", time.Since(start).Round(100*time.Millisecond))

	// What the guest got, as its initramfs printed it from ipconfig's
	// /run/net-eth0.conf: PROTO is bootp only for a reply without option
	// 53 (klibc sets dhcp when the reply has a DHCP message type).
	want := "berth-initramfs: bootp eth0 address " + addr + "/255.255.255.0 server 10.78.0.1 bootfile bootp/vmlinux.nb rootpath nbd:10.78.0.1:10809"
	if !strings.Contains(out, want) {
		t.Errorf("console lacks %q:\n%s", want, tailStr(out, 4000))
	}
	if !strings.Contains(out, "BERTH-MARKS: p1 END") {
		t.Errorf("root over NBD: console lacks the root's marks line:\n%s", tailStr(out, 4000))
	}

	var st wire.NetbootStatus
	if err := json.Unmarshal([]byte(r.berth("netboot", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	d, nb := st.Services["dhcp"], st.Services["diskless"]
	if d["bootp_replies"] < 1 || d["offers"] != 0 || d["acks"] != 0 || nb["exports"] != 1 {
		t.Errorf("counters: dhcp %v diskless %v (want BOOTP replies only and one NBD export)", d, nb)
	}
	log := r.log.String()
	if !strings.Contains(log, `msg="bootp reply"`) || !strings.Contains(log, "mac="+mac) {
		t.Errorf("daemon log has no BOOTP reply line for %s:\n%s", mac, log)
	}
	if leases := r.berth("netboot", "lease", "list"); strings.Contains(leases, mac) {
		t.Errorf("a BOOTP client got a lease:\n%s", leases)
	}
}

// markerInitramfs writes a cpio initramfs whose /init prints marker on
// the console and powers off: the smallest thing to boot to.
func markerInitramfs(tb testing.TB, out, marker string) {
	initramfs(tb, out, "/bin/busybox echo "+marker+"\n/bin/busybox poweroff -f\n")
}

// initramfs writes a cpio initramfs of busybox and an /init running
// script (busybox sh).
func initramfs(tb testing.TB, out, script string) {
	tb.Helper()
	dir := tb.TempDir()
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		tb.Skip("busybox-static not installed")
	}
	copyFile(tb, bb, filepath.Join(dir, "bin", "busybox"))
	os.Chmod(filepath.Join(dir, "bin", "busybox"), 0o755)
	os.WriteFile(filepath.Join(dir, "init"), []byte("#!/bin/busybox sh\n"+script), 0o755)
	cmd := exec.Command("cpio", "--quiet", "-o", "-H", "newc", "-O", out)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader("bin\nbin/busybox\ninit\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("cpio: %v %s", err, b)
	}
}

// BenchmarkPXEBoot boots the same kernel and marker initramfs over the
// network three ways in one run, alternating: berth with a TFTP-served
// iPXE script loading both over TFTP; berth with the host's HTTP iPXE
// script loading both over HTTP; and dnsmasq (DHCP + TFTP, dhcp-boot of
// the same TFTP script). It reports seconds from QEMU's start to the
// marker, and berth/dnsmasq ratios (goal ≤ 1.0).
func BenchmarkPXEBoot(b *testing.B) {
	if ok, why := vmtest.Root(); !ok {
		b.Skip(why)
	}
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		b.Skip("dnsmasq not installed")
	}
	k, err := vmtest.DebianKernel()
	if err != nil {
		b.Fatal(err)
	}
	r := newRig(b)
	const marker = "BERTH-PXE-MARKER"
	copyFile(b, k.Vmlinuz, filepath.Join(r.root, "vmlinuz"))
	markerInitramfs(b, filepath.Join(r.root, "marker.cpio"), marker)
	os.WriteFile(filepath.Join(r.root, "boot.ipxe"), []byte("#!ipxe\nkernel vmlinuz initrd=marker.cpio console=ttyS0 quiet panic=-1\ninitrd marker.cpio\nboot\n"), 0o644)
	const macT, macH, macD = "52:54:00:be:0b:01", "52:54:00:be:0b:02", "52:54:00:be:0b:03"
	r.berth("netboot", "host", "add", macT, "--bootfile", "boot.ipxe")
	r.berth("netboot", "host", "add", macH, "--kernel", "vmlinuz", "--initrd", "marker.cpio", "--cmdline", "console=ttyS0 quiet panic=-1")
	rounds := 2
	var tTFTP, tHTTP, tDns time.Duration
	for i := 0; i < rounds; i++ {
		r.berth("netboot", "enable", "--interface", "br0", "--range", "10.78.0.100-10.78.0.150")
		_, d := r.bootTo(fmt.Sprintf("tftp%d", i), macT, marker)
		tTFTP += d
		_, d = r.bootTo(fmt.Sprintf("http%d", i), macH, marker)
		tHTTP += d
		r.berth("netboot", "disable")
		dm := exec.Command("ip", "netns", "exec", r.ns, dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
			"--interface=br0", "--bind-interfaces", "--dhcp-range=10.78.0.100,10.78.0.150,1h", "--dhcp-boot=boot.ipxe",
			"--enable-tftp", "--tftp-root="+r.root, "--dhcp-leasefile="+filepath.Join(b.TempDir(), "leases"), "--pid-file=", "--user=root")
		if err := dm.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		_, d = r.bootTo(fmt.Sprintf("dnsmasq%d", i), macD, marker)
		tDns += d
		dm.Process.Signal(syscall.SIGTERM)
		dm.Wait()
		b.Logf("round %d: berth TFTP %.1fs, berth HTTP %.1fs, dnsmasq TFTP %.1fs", i+1, tTFTP.Seconds()/float64(i+1), tHTTP.Seconds()/float64(i+1), tDns.Seconds()/float64(i+1))
	}
	n := float64(rounds)
	b.ReportMetric(tTFTP.Seconds()/n, "berth-tftp-s")
	b.ReportMetric(tHTTP.Seconds()/n, "berth-http-s")
	b.ReportMetric(tDns.Seconds()/n, "dnsmasq-s")
	b.ReportMetric(tTFTP.Seconds()/tDns.Seconds(), "tftp/dnsmasq")
	b.ReportMetric(tHTTP.Seconds()/tDns.Seconds(), "http/dnsmasq")
}

// TestProxyBoot boots QEMU with iPXE beside another DHCP server: dnsmasq
// (in its own namespace on the same bridge) hands out the address, berth
// in ProxyDHCP mode only the boot options (the host's HTTP iPXE script),
// and the kernel boots to a marker.
func TestProxyBoot(t *testing.T) {
	r := newMarkerRig(t, "dnsmasq")
	const marker = "BERTH-PROXY-MARKER"
	markerInitramfs(t, filepath.Join(r.root, "marker.cpio"), marker)

	// The network's own DHCP server, another machine on the bridge.
	dns := r.ns + "-dm"
	ip(t, "netns", "add", dns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", dns).Run() })
	ip(t, "-n", r.ns, "link", "add", "dm0", "type", "veth", "peer", "name", "eth0", "netns", dns)
	ip(t, "-n", r.ns, "link", "set", "dm0", "master", "br0", "up")
	ip(t, "-n", dns, "addr", "add", "10.78.0.2/24", "dev", "eth0")
	ip(t, "-n", dns, "link", "set", "eth0", "up")
	dm := exec.Command("ip", "netns", "exec", dns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
		"--interface=eth0", "--bind-interfaces", "--dhcp-range=10.78.0.160,10.78.0.200,1h",
		"--dhcp-leasefile="+filepath.Join(t.TempDir(), "leases"), "--pid-file=", "--user=root")
	if err := dm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dm.Process.Kill(); dm.Wait() })

	const mac = "52:54:00:e2:e0:1c"
	r.berth("netboot", "host", "add", mac, "--name", "proxied", "--kernel", "vmlinuz", "--initrd", "marker.cpio", "--cmdline", "console=ttyS0 quiet panic=-1")
	r.berth("netboot", "enable", "--interface", "br0", "--proxy")
	_, took := r.bootTo("proxy", mac, marker)
	t.Logf("ProxyDHCP boot to marker: %s", took.Round(100*time.Millisecond))
	var st wire.NetbootStatus
	if err := json.Unmarshal([]byte(r.berth("netboot", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	d, h := st.Services["dhcp"], st.Services["http"]
	if d["proxy_offers"]+d["proxy_acks"] == 0 || d["offers"] != 0 || d["acks"] != 0 || h["scripts"] != 1 {
		t.Errorf("counters: dhcp %v http %v (want proxy replies only and one script)", d, h)
	}
	if leases := r.berth("netboot", "lease", "list"); strings.Contains(leases, mac) {
		t.Errorf("berth leased an address in proxy mode:\n%s", leases)
	}
}
