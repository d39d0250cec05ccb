package netboot

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// ICMPv6 types of neighbour discovery (RFC 4861).
const (
	icmpRouterSolicitation  = 133
	icmpRouterAdvertisement = 134
)

// routerAdvert is an RA that announces nothing: hop limit 64, no managed
// or other-config flag, router lifetime 0 (not a default router), no
// prefixes. iPXE ends IPv6 autoconfiguration as soon as it sees one,
// instead of waiting ~15 s, and clients configure no IPv6 from it.
var routerAdvert = []byte{icmpRouterAdvertisement, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// keepAdvertising runs advertise on iface until ctx ends, starting it
// again when it fails. An interface often has no IPv6 link-local address
// yet when network boot is enabled on it: a bridge whose only ports are
// the taps of VMs not yet started has no carrier, and gets its address
// (after duplicate address detection) only once the first VM attaches,
// which is when its iPXE would start waiting for IPv6.
func keepAdvertising(ctx context.Context, iface string, log *slog.Logger) {
	warned := false
	for {
		err := advertise(ctx, iface, log)
		if ctx.Err() != nil {
			return
		}
		if !warned {
			log.Warn("netboot: no IPv6 router advertisements on the interface yet, retrying (until they start, iPXE waits for IPv6 autoconfiguration)", "interface", iface, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// advertise answers router solicitations on iface (and sends an
// unsolicited advertisement every 10 s) until ctx ends. It needs the
// interface to have an IPv6 link-local address.
func advertise(ctx context.Context, iface string, log *slog.Logger) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("raw ICMPv6 socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.BindToDevice(fd, iface); err != nil {
		return fmt.Errorf("bind to %s: %w", iface, err)
	}
	for _, o := range [][2]int{{unix.IPV6_MULTICAST_HOPS, 255}, {unix.IPV6_UNICAST_HOPS, 255}, {unix.IPV6_MULTICAST_IF, ifi.Index}, {unix.IPV6_MULTICAST_LOOP, 0}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o[0], o[1]); err != nil {
			return fmt.Errorf("ICMPv6 socket option %d: %w", o[0], err)
		}
	}
	// Receive only router solicitations.
	var filter unix.ICMPv6Filter
	for i := range filter.Data {
		filter.Data[i] = 0xffffffff
	}
	filter.Data[icmpRouterSolicitation>>5] &^= 1 << (icmpRouterSolicitation & 31)
	if err := unix.SetsockoptICMPv6Filter(fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &filter); err != nil {
		return fmt.Errorf("ICMPv6 filter: %w", err)
	}
	allRouters := [16]byte{0xff, 0x02, 15: 2}
	if err := unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, &unix.IPv6Mreq{Multiaddr: allRouters, Interface: uint32(ifi.Index)}); err != nil {
		return fmt.Errorf("join ff02::2 on %s: %w", iface, err)
	}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 500000})
	allNodes := &unix.SockaddrInet6{Addr: [16]byte{0xff, 0x02, 15: 1}, ZoneId: uint32(ifi.Index)}
	send := func() error { return unix.Sendto(fd, routerAdvert, 0, allNodes) }
	if err := send(); err != nil {
		return fmt.Errorf("send router advertisement on %s: %w (does it have an IPv6 link-local address?)", iface, err)
	}
	log.Info("netboot: sending IPv6 router advertisements without prefixes", "interface", iface)
	last := time.Now()
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == nil && n > 0 && buf[0] == icmpRouterSolicitation {
			_ = send()
			last = time.Now()
			continue
		}
		if time.Since(last) > 10*time.Second {
			_ = send()
			last = time.Now()
		}
	}
	return nil
}
