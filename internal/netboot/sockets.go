package netboot

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

func bindControl(iface string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			serr = unix.BindToDevice(int(fd), iface)
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// listenAddr opens a UDP socket on ip:port, bound to iface as well, so
// that it never answers packets that arrived on another interface.
func listenAddr(ctx context.Context, iface string, ip netip.Addr, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: bindControl(iface)}
	pc, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("listen on %s udp %s:%d: %w", iface, ip, port, err)
	}
	return pc.(*net.UDPConn), nil
}

// listenTCP opens a TCP listener on addr bound to iface.
func listenTCP(ctx context.Context, iface, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: bindControl(iface)}
	ln, err := lc.Listen(ctx, "tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s tcp %s: %w (choose another port with --http-port)", iface, addr, err)
	}
	return ln, nil
}
