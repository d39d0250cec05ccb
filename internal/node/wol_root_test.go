package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestWakeOnLANNetns sends real magic packets over a veth pair into a
// network namespace the test creates, and checks what arrives there. No
// packet can reach any other host: the sending socket is bound to the
// host end of the veth, whose only peer lives in the test's namespace.
func TestWakeOnLANNetns(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv("BERTH_TEST_ROOT") != "1" {
		t.Skip("skipping: creates a network namespace and veth pair with ip(8); run as root with BERTH_TEST_ROOT=1")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: ip(8) from iproute2 not found in PATH")
	}

	pid := os.Getpid()
	ns := fmt.Sprintf("berth-wol-%d", pid)
	hostIf, peerIf := fmt.Sprintf("wolh%d", pid), fmt.Sprintf("wolp%d", pid)
	x := freeSubnet(t, pid)
	hostIP := fmt.Sprintf("10.213.%d.1", x)
	peerIP := fmt.Sprintf("10.213.%d.2", x)
	bcast := net.IPv4(10, 213, byte(x), 255).To4()

	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() { ipCleanup(t, "netns", "delete", ns) })
	ipCmd(t, "link", "add", hostIf, "type", "veth", "peer", "name", peerIf)
	t.Cleanup(func() { ipCleanup(t, "link", "delete", hostIf) }) // takes the peer with it
	ipCmd(t, "link", "set", peerIf, "netns", ns)
	ipCmd(t, "addr", "add", hostIP+"/24", "dev", hostIf)
	ipCmd(t, "link", "set", hostIf, "up")
	ipCmd(t, "-n", ns, "addr", "add", peerIP+"/24", "dev", peerIf)
	ipCmd(t, "-n", ns, "link", "set", peerIf, "up")
	waitOperUp(t, hostIf)

	conn := listenInNetns(t, ns, "0.0.0.0:9")
	t.Cleanup(func() { conn.Close() }) // before the namespace goes: it holds a reference

	// The default route is taken from a fixture naming the veth, so the
	// iface == "" path is tested without touching the real routing table.
	routes := filepath.Join(t.TempDir(), "route")
	write(t, "/", routes, routeHeader+
		"eth9\t00000000\t010200C0\t0003\t0\t0\t500\t00000000\t0\t0\t0\n"+
		hostIf+"\t00000000\t0100D50A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n")
	oldRoutes := procNetRoute
	t.Cleanup(func() { procNetRoute = oldRoutes })
	procNetRoute = routes

	for _, tt := range []struct {
		name  string
		iface string
		mac   net.HardwareAddr
	}{
		{"named interface", hostIf, net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}},
		{"default route interface", "", net.HardwareAddr{0xde, 0xad, 0xbe, 0xef, 0x00, 0x01}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			dest, err := WakeOnLAN(ctx, tt.mac, tt.iface)
			if err != nil {
				t.Fatal(err)
			}
			if want := (&net.UDPAddr{IP: bcast, Port: 9}); dest.String() != want.String() {
				t.Errorf("WakeOnLAN returned destination %v, want %v", dest, want)
			}

			payload, src, dst := receive(t, conn)
			want, _ := MagicPacket(tt.mac)
			if diff := cmp.Diff(want, payload); diff != "" {
				t.Errorf("received payload mismatch (-want +got):\n%s", diff)
			}
			if !src.IP.Equal(net.ParseIP(hostIP)) {
				t.Errorf("packet came from %v, want %s (the host end of the veth)", src, hostIP)
			}
			if !dst.Equal(bcast) {
				t.Errorf("packet was addressed to %v, want %v", dst, bcast)
			}
		})
	}
}

// freeSubnet picks x so that 10.213.x.0/24 overlaps no address on the host.
func freeSubnet(t *testing.T, seed int) int {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 250 {
		x := (seed+i)%250 + 1
		_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.213.%d.0/24", x))
		used := false
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && (subnet.Contains(n.IP) || n.Contains(subnet.IP)) {
				used = true
				break
			}
		}
		if !used {
			return x
		}
	}
	t.Skip("skipping: no free 10.213.x.0/24 subnet on this host")
	return 0
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := runIP(args...); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ipCleanup runs ip(8) from a Cleanup function, where t.Context is done.
func ipCleanup(t *testing.T, args ...string) {
	if out, err := runIP(args...); err != nil {
		t.Logf("cleanup: ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func runIP(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "ip", args...).CombinedOutput()
}

// waitOperUp waits until both ends of the veth are up, so the first packet
// is not dropped for lack of carrier.
func waitOperUp(t *testing.T, iface string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile("/sys/class/net/" + iface + "/operstate")
		if err == nil && strings.TrimSpace(string(b)) == "up" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not up after 5s (operstate %q, %v)", iface, b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listenInNetns opens a UDP socket on addr inside network namespace ns. The
// socket is created by a goroutine locked to an OS thread that has joined
// ns; the goroutine never unlocks, so the runtime discards that thread when
// it exits and no other goroutine ever runs in ns. The socket stays in ns.
// IP_PKTINFO is enabled so receive can report each packet's destination.
func listenInNetns(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	type result struct {
		conn net.PacketConn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			})
			return errors.Join(err, serr)
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		ch <- result{pc, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen on %s in netns %s: %v", addr, ns, r.err)
	}
	return r.conn.(*net.UDPConn)
}

// receive reads one datagram and returns its payload, source and
// destination address.
func receive(t *testing.T, conn *net.UDPConn) ([]byte, *net.UDPAddr, net.IP) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	n, oobn, _, src, err := conn.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatalf("no packet arrived in the namespace: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	var dst net.IP
	for _, m := range msgs {
		// struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= 12 {
			dst = net.IP(m.Data[8:12])
		}
	}
	if dst == nil {
		t.Fatal("no IP_PKTINFO control message with the destination address")
	}
	return buf[:n], src, dst
}
