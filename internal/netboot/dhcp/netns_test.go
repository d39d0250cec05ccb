package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// This file tests the server with real clients (busybox udhcpc, dnsmasq as
// the "other" DHCP server beside ProxyDHCP, and BOOTP/PXE requests built
// by the test) over a bridge inside network namespaces the test creates.
// Nothing leaves those namespaces.

func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 || os.Getenv("BERTH_TEST_ROOT") != "1" {
		t.Skip("skipping: creates network namespaces, a bridge and veth pairs; run as root with BERTH_TEST_ROOT=1")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (make deps installs it from deps/netboot.debs)", tool)
		}
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// lan is a bridge in namespace srv; ports attach other namespaces to it.
type lan struct {
	t      *testing.T
	prefix string
	srv    string
	n      int
}

func newLAN(t *testing.T) *lan {
	pid := os.Getpid() % 10000
	l := &lan{t: t, prefix: fmt.Sprintf("bd%d", pid), srv: fmt.Sprintf("berth-dhcp-%d-srv", pid)}
	l.ns(l.srv)
	run(t, "ip", "-n", l.srv, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", l.srv, "addr", "add", "10.9.0.1/24", "dev", "br0")
	run(t, "ip", "-n", l.srv, "link", "set", "br0", "up")
	run(t, "ip", "-n", l.srv, "link", "set", "lo", "up")
	return l
}

// name returns a namespace name unique to this test process.
func (l *lan) name(s string) string { return l.srv[:len(l.srv)-3] + s }

func (l *lan) ns(name string) {
	run(l.t, "ip", "netns", "add", name)
	l.t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
}

// port creates namespace name with interface eth0 (MAC mac) on the bridge.
func (l *lan) port(name string, mac net.HardwareAddr) {
	l.n++
	host := fmt.Sprintf("%s%d", l.prefix, l.n)
	l.ns(name)
	run(l.t, "ip", "link", "add", host, "type", "veth", "peer", "name", host+"p")
	run(l.t, "ip", "link", "set", host, "netns", l.srv)
	run(l.t, "ip", "link", "set", host+"p", "netns", name)
	run(l.t, "ip", "-n", name, "link", "set", host+"p", "name", "eth0")
	if mac != nil {
		run(l.t, "ip", "-n", name, "link", "set", "eth0", "address", mac.String())
	}
	run(l.t, "ip", "-n", name, "link", "set", "eth0", "up")
	run(l.t, "ip", "-n", name, "link", "set", "lo", "up")
	run(l.t, "ip", "-n", l.srv, "link", "set", host, "master", "br0", "up")
}

// inNetns runs fn on a thread that entered namespace ns; the thread is
// discarded afterwards (the goroutine exits still locked).
func inNetns[T any](t *testing.T, ns string, fn func() (T, error)) T {
	t.Helper()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		v, err := fn()
		ch <- res{v, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.v
}

func startServer(t *testing.T, ns string, cfg Config) (*Server, context.CancelFunc) {
	t.Helper()
	cfg.Listen = func(ctx context.Context, iface string, port int) (*net.UDPConn, error) {
		type r struct {
			c   *net.UDPConn
			err error
		}
		res := inNetns(t, ns, func() (r, error) { c, err := ListenUDP(ctx, iface, port); return r{c, err}, nil })
		return res.c, res.err
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ready) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return s, stop
}

// udhcpc runs busybox udhcpc in ns and returns the variables its script
// saw (ip, siaddr, boot_file, rootpath, hostname, …).
func udhcpc(t *testing.T, ns string, extra ...string) (map[string]string, error) {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	out := filepath.Join(dir, "env")
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && env > "+out+"\nexit 0\n"), 0o755)
	args := append([]string{"netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1", "-s", script}, extra...)
	if b, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("udhcpc: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

func TestRealClients(t *testing.T) {
	needRoot(t, "busybox")
	l := newLAN(t)
	static := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0, 1}
	dyn := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0, 2}
	dyn2 := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0, 3}
	boot := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0, 4}
	l.port(l.name("c1"), static)
	l.port(l.name("c2"), dyn)
	l.port(l.name("c3"), dyn2)
	l.port(l.name("c4"), boot)
	// A second network the server is not configured for.
	other := fmt.Sprintf("berth-dhcp-%d-oth", os.Getpid()%10000)
	l.ns(other)
	run(t, "ip", "-n", l.srv, "link", "add", "lan2", "type", "veth", "peer", "name", "eth0", "netns", other)
	run(t, "ip", "-n", l.srv, "addr", "add", "10.9.1.1/24", "dev", "lan2")
	run(t, "ip", "-n", l.srv, "link", "set", "lan2", "up")
	run(t, "ip", "-n", other, "link", "set", "eth0", "up")

	hosts := map[string]Host{
		static.String(): {Name: "aldebaran", IP: netip.MustParseAddr("10.9.0.100"), BootFile: "/tftpboot/vmlinux.nb", RootPath: "/tftpboot/10.9.0.100"},
		boot.String():   {Name: "bootp-only", IP: netip.MustParseAddr("10.9.0.101"), BootFile: "vmlinux.nb"},
	}
	dir := t.TempDir()
	leases, err := OpenLeases(filepath.Join(dir, "leases"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := []Range{{netip.MustParseAddr("10.9.0.150"), netip.MustParseAddr("10.9.0.151")}}
	cfg := Config{
		Scopes: []Scope{{Interface: "br0", ServerIP: netip.MustParseAddr("10.9.0.1"), Subnet: netip.MustParsePrefix("10.9.0.0/24"),
			Router: netip.MustParseAddr("10.9.0.1"), Ranges: pool, LeaseTime: time.Hour}},
		Lookup: func(mac net.HardwareAddr) (Host, bool) { h, ok := hosts[mac.String()]; return h, ok },
		Leases: leases,
	}
	srv, stop := startServer(t, l.srv, cfg)

	env, err := udhcpc(t, l.name("c1"))
	if err != nil {
		t.Fatal(err)
	}
	if env["ip"] != "10.9.0.100" || env["boot_file"] != "/tftpboot/vmlinux.nb" || env["rootpath"] != "/tftpboot/10.9.0.100" || env["hostname"] != "aldebaran" || env["siaddr"] != "10.9.0.1" {
		t.Fatalf("static host got %v", env)
	}
	env, err = udhcpc(t, l.name("c2"))
	if err != nil {
		t.Fatal(err)
	}
	first := env["ip"]
	if !pool[0].Contains(netip.MustParseAddr(first)) || env["lease"] != "3600" {
		t.Fatalf("dynamic client got %v", env)
	}

	// The BOOTP-only client: a BOOTP request (no option 53) built here.
	reply := bootpExchange(t, l.name("c4"), boot)
	if reply.YIAddr.String() != "10.9.0.101" || reply.File != "vmlinux.nb" || reply.Type() != 0 {
		t.Fatalf("BOOTP reply: yiaddr %v file %q type %d", reply.YIAddr, reply.File, reply.Type())
	}

	// Nothing answers on the interface the server was not given.
	if _, err := udhcpc(t, other); err == nil {
		t.Fatal("a client on an unconfigured interface got a lease")
	}

	st := srv.Stats()
	if st.Acks < 2 || st.BOOTPReplies != 1 {
		t.Fatalf("stats %+v", st)
	}

	// Restart: the lease survives; the other client gets the other
	// address, and the pool (2 addresses) then refuses a third.
	stop()
	leases.Close()
	leases, err = OpenLeases(filepath.Join(dir, "leases"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer leases.Close()
	cfg.Leases = leases
	startServer(t, l.srv, cfg)
	env, err = udhcpc(t, l.name("c3"), "-r", first)
	if err != nil {
		t.Fatal(err)
	}
	if env["ip"] == first || !pool[0].Contains(netip.MustParseAddr(env["ip"])) {
		t.Fatalf("after restart a second client got %q; %s is leased", env["ip"], first)
	}
	env, err = udhcpc(t, l.name("c2"))
	if err != nil || env["ip"] != first {
		t.Fatalf("after restart the lease holder got %v (%v), want %s", env, err, first)
	}
}

func bootpExchange(t *testing.T, ns string, mac net.HardwareAddr) *Message {
	t.Helper()
	conn := clientConn(t, ns)
	defer conn.Close()
	m := request(mac, 0, nil)
	m.XID = 0xb0070001
	if _, err := conn.WriteToUDP(m.Marshal(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no BOOTP reply: %v", err)
		}
		r, err := Parse(buf[:n])
		if err == nil && r.XID == m.XID && r.Op == OpReply {
			return r
		}
	}
}

// TestProxyBesideDnsmasq runs dnsmasq as the network's DHCP server and
// berth as ProxyDHCP on the same bridge; a PXE client built by the test
// gets its address from dnsmasq and its boot file from berth, both in the
// broadcast OFFER phase and from port 4011.
func TestProxyBesideDnsmasq(t *testing.T) {
	needRoot(t, "dnsmasq")
	l := newLAN(t)
	client := net.HardwareAddr{0x52, 0x54, 0, 0x13, 0, 1}
	l.port(l.name("px"), client)
	l.port(l.name("dm"), nil)
	run(t, "ip", "-n", l.name("dm"), "addr", "add", "10.9.0.2/24", "dev", "eth0")
	dm := exec.Command("ip", "netns", "exec", l.name("dm"), "dnsmasq", "--keep-in-foreground", "--no-daemon", "--port=0",
		"--conf-file=/dev/null", "--no-resolv", "--interface=eth0", "--bind-interfaces", "--dhcp-range=10.9.0.50,10.9.0.60,1h",
		"--dhcp-leasefile="+filepath.Join(t.TempDir(), "leases"), "--pid-file=", "--user=root")
	if err := dm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dm.Process.Kill(); dm.Wait() })

	cfg := Config{Scopes: []Scope{{Interface: "br0", ServerIP: netip.MustParseAddr("10.9.0.1"), Subnet: netip.MustParsePrefix("10.9.0.0/24"),
		Proxy: true, Boot: Boot{BIOS: "undionly.kpxe", EFI64: "ipxe.efi"}}}}
	srv, _ := startServer(t, l.srv, cfg)

	conn := clientConn(t, l.name("px"))
	defer conn.Close()
	pxe := map[byte][]byte{OptVendorClass: []byte("PXEClient:Arch:00007:UNDI:003016"), OptClientArch: {0, 7}, OptClientGUID: {0, 1, 2, 3, 4}}
	disc := request(client, Discover, pxe)
	disc.Flags = 0x8000
	time.Sleep(500 * time.Millisecond) // let dnsmasq bind
	var address, proxy *Message
	// dnsmasq may take long to start on a loaded host: resend until
	// both offers arrive.
	deadline := time.Now().Add(60 * time.Second)
	buf := make([]byte, 1500)
	for (address == nil || proxy == nil) && time.Now().Before(deadline) {
		conn.WriteToUDP(disc.Marshal(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67})
		conn.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				break
			}
			r, err := Parse(buf[:n])
			if err != nil || r.XID != disc.XID || r.Type() != Offer {
				continue
			}
			if id, _ := r.Addr(OptServerID); id.String() == "10.9.0.1" {
				proxy = r
			} else {
				address = r
			}
		}
	}
	if address == nil || proxy == nil {
		t.Fatalf("offers: dnsmasq %v, berth proxy %v", address != nil, proxy != nil)
	}
	if !proxy.YIAddr.IsUnspecified() || proxy.File != "ipxe.efi" || proxy.VendorClass() != "PXEClient" {
		t.Fatalf("proxy offer: yiaddr %v file %q vendor %q", proxy.YIAddr, proxy.File, proxy.VendorClass())
	}
	if address.YIAddr.String() < "10.9.0.50" || address.File != "" {
		t.Fatalf("dnsmasq offer: %v file %q", address.YIAddr, address.File)
	}
	// Take the address, then ask the proxy on port 4011 from it.
	run(t, "ip", "-n", l.name("px"), "addr", "add", address.YIAddr.String()+"/24", "dev", "eth0")
	req := request(client, Request, pxe)
	req.CIAddr = address.YIAddr
	req.XID = 0x4011
	if _, err := conn.WriteToUDP(req.Marshal(), &net.UDPAddr{IP: net.IPv4(10, 9, 0, 1), Port: 4011}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no ACK from port 4011: %v", err)
		}
		r, err := Parse(buf[:n])
		if err != nil || r.XID != req.XID {
			continue
		}
		if r.Type() != Ack || r.File != "ipxe.efi" || from.Port != 4011 {
			t.Fatalf("4011 reply type %d file %q from %v", r.Type(), r.File, from)
		}
		break
	}
	if st := srv.Stats(); st.ProxyOffers == 0 || st.ProxyAcks != 1 || st.Acks != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// clientConn opens a DHCP client socket (port 68, broadcast, bound to
// eth0) in namespace ns.
func clientConn(t *testing.T, ns string) *net.UDPConn {
	t.Helper()
	return inNetns(t, ns, func() (*net.UDPConn, error) {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1), unix.BindToDevice(int(fd), "eth0"))
			})
			return errors.Join(err, serr)
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
		if err != nil {
			return nil, err
		}
		return pc.(*net.UDPConn), nil
	})
}
