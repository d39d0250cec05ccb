package netboot

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRouterAdvert checks the fast-boot fix for iPXE's IPv6 wait: inside a
// network namespace this test creates (a veth pair, IPv6 link-local on
// both ends), a router solicitation sent from the peer end is answered at
// once with an advertisement that announces nothing (no flags, router
// lifetime 0, no prefix options). Advertising starts while the links are
// still down (no link-local address yet, as on a bridge whose VMs have
// not started) and must begin once they come up. It runs on a thread that
// entered the namespace; the thread is discarded afterwards.
func TestRouterAdvert(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv("BERTH_TEST_ROOT") != "1" {
		t.Skip("skipping: creates a network namespace; run as root with BERTH_TEST_ROOT=1")
	}
	ns := fmt.Sprintf("berth-ra-%d", os.Getpid())
	ip := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	ip("-n", ns, "link", "add", "srv0", "type", "veth", "peer", "name", "cli0")
	enter := func() error {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		if err := enter(); err != nil {
			errc <- err
			return
		}
		keepAdvertising(ctx, "srv0", slog.New(slog.DiscardHandler))
		errc <- fmt.Errorf("keepAdvertising returned before the test ended")
	}()
	time.Sleep(time.Second)
	ip("-n", ns, "link", "set", "srv0", "up")
	ip("-n", ns, "link", "set", "cli0", "up")
	type res struct {
		ra  []byte
		err error
	}
	got := make(chan res, 1)
	go func() {
		if err := enter(); err != nil {
			got <- res{err: err}
			return
		}
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
		if err != nil {
			got <- res{err: err}
			return
		}
		defer unix.Close(fd)
		unix.BindToDevice(fd, "cli0")
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1})
		idx := 0
		if ifi, err := net.InterfaceByName("cli0"); err == nil {
			idx = ifi.Index
		}
		rs := []byte{icmpRouterSolicitation, 0, 0, 0, 0, 0, 0, 0}
		buf := make([]byte, 1500)
		// Duplicate address detection takes a second or two, longer
		// on a loaded host.
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			unix.Sendto(fd, rs, 0, &unix.SockaddrInet6{Addr: [16]byte{0xff, 0x02, 15: 2}, ZoneId: uint32(idx)})
			start := time.Now()
			for time.Since(start) < time.Second {
				n, _, err := unix.Recvfrom(fd, buf, 0)
				if err == nil && n > 0 && buf[0] == icmpRouterAdvertisement {
					got <- res{ra: append([]byte(nil), buf[:n]...)}
					return
				}
				if err != nil {
					break
				}
			}
		}
		got <- res{err: fmt.Errorf("no router advertisement on cli0 within 60 s")}
	}()
	var r res
	select {
	case r = <-got:
	case err := <-errc:
		t.Fatalf("advertise ended: %v", err)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	ra := r.ra
	if len(ra) != 16 || ra[4] != 64 || ra[5] != 0 || ra[6] != 0 || ra[7] != 0 {
		t.Fatalf("advertisement % x: want 16 bytes, hop limit 64, no M/O flags, router lifetime 0, no options", ra)
	}
}
