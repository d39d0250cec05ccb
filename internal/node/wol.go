package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// WoLPort is the UDP port magic packets are sent to (the discard port, which
// Wake-on-LAN tools conventionally use).
const WoLPort = 9

// procNetRoute is the IPv4 routing table WakeOnLAN reads to find the
// default interface; tests point it at a fixture.
var procNetRoute = "/proc/net/route"

// MagicPacket returns the Wake-on-LAN magic packet for mac: 6 bytes of 0xFF
// followed by the MAC repeated 16 times, 102 bytes in all. It fails unless
// mac is a 6-byte Ethernet address.
func MagicPacket(mac net.HardwareAddr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("magic packet: MAC address %q has %d bytes, want 6", mac.String(), len(mac))
	}
	p := make([]byte, 0, 6+16*6)
	for range 6 {
		p = append(p, 0xff)
	}
	for range 16 {
		p = append(p, mac...)
	}
	return p, nil
}

// WakeOnLAN sends the magic packet for mac to UDP port 9 at the directed
// broadcast address of the first IPv4 address of interface iface, and
// returns that destination. The socket is bound to iface (SO_BINDTODEVICE),
// so the packet leaves through it whatever the routing table says; this
// needs CAP_NET_RAW. If iface is empty, the interface holding the default
// IPv4 route is used. On a /31 or /32 address, which has no directed
// broadcast, the packet goes to the limited broadcast 255.255.255.255 on
// the same interface instead.
//
// The packet is sent once; ctx bounds the time spent sending it. Success
// means the packet left, not that the target woke up.
func WakeOnLAN(ctx context.Context, mac net.HardwareAddr, iface string) (dest *net.UDPAddr, err error) {
	pkt, err := MagicPacket(mac)
	if err != nil {
		return nil, fmt.Errorf("wake-on-lan: %w", err)
	}
	if iface == "" {
		if iface, err = defaultRouteInterface(procNetRoute); err != nil {
			return nil, fmt.Errorf("wake-on-lan: %w", err)
		}
	}
	ipnet, err := interfaceIPv4(iface)
	if err != nil {
		return nil, fmt.Errorf("wake-on-lan: %w", err)
	}
	dest = &net.UDPAddr{IP: broadcastAddr(ipnet), Port: WoLPort}

	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("set SO_BROADCAST: %w", serr)
				return
			}
			if serr = unix.BindToDevice(int(fd), iface); serr != nil {
				serr = fmt.Errorf("bind socket to interface %s (SO_BINDTODEVICE needs CAP_NET_RAW): %w", iface, serr)
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.DialContext(ctx, "udp4", dest.String())
	if err != nil {
		return nil, fmt.Errorf("wake-on-lan via %s to %s: %w", iface, dest, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetWriteDeadline(dl); err != nil {
			return nil, fmt.Errorf("wake-on-lan via %s: %w", iface, err)
		}
	}
	if _, err := conn.Write(pkt); err != nil {
		return nil, fmt.Errorf("wake-on-lan via %s: send magic packet for %s to %s: %w", iface, mac, dest, err)
	}
	return dest, nil
}

// interfaceIPv4 returns the first IPv4 address of the named interface,
// which must be up and not a loopback.
func interfaceIPv4(name string) (*net.IPNet, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s not found: check `ip link`: %w", name, err)
	}
	if ifi.Flags&net.FlagLoopback != 0 {
		return nil, fmt.Errorf("interface %s is a loopback: name the interface on the sleeping host's LAN", name)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("interface %s is down: bring it up with `ip link set %s up`", name, name)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("list addresses of interface %s: %w", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n, nil
		}
	}
	return nil, fmt.Errorf("interface %s has no IPv4 address, so there is no broadcast address to send to: check `ip -4 addr show dev %s`", name, name)
}

// broadcastAddr returns the directed broadcast address of the IPv4 network
// n: its address with all host bits set. For /31 and /32 networks, which
// have no broadcast address, it returns 255.255.255.255.
func broadcastAddr(n *net.IPNet) net.IP {
	ip := n.IP.To4()
	mask := n.Mask
	if len(mask) == net.IPv6len {
		mask = mask[12:]
	}
	if ones, bits := mask.Size(); ip == nil || bits != 32 || ones >= 31 {
		return net.IPv4bcast.To4()
	}
	b := make(net.IP, net.IPv4len)
	for i := range b {
		b[i] = ip[i] | ^mask[i]
	}
	return b
}

// defaultRouteInterface returns the interface of the default IPv4 route in
// the routing table at path, in /proc/net/route format.
func defaultRouteInterface(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("find default route: %w", err)
	}
	defer f.Close()
	name, err := parseDefaultRoute(f)
	if err != nil {
		return "", fmt.Errorf("find default route in %s: %w", path, err)
	}
	return name, nil
}

// parseDefaultRoute returns the interface of the up IPv4 default route
// (destination and mask 0) with the lowest metric, as the kernel would
// pick it.
func parseDefaultRoute(r io.Reader) (string, error) {
	best, bestMetric := "", uint64(0)
	sc := bufio.NewScanner(r)
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		if first || len(f) < 8 { // header: Iface Destination Gateway ...
			continue
		}
		flags, err1 := strconv.ParseUint(f[3], 16, 32)
		metric, err2 := strconv.ParseUint(f[6], 10, 32)
		if err1 != nil || err2 != nil {
			return "", fmt.Errorf("bad route line %q", sc.Text())
		}
		if f[1] != "00000000" || f[7] != "00000000" || flags&unix.RTF_UP == 0 {
			continue
		}
		if best == "" || metric < bestMetric {
			best, bestMetric = f[0], metric
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if best == "" {
		return "", fmt.Errorf("no default IPv4 route: name the interface to send the magic packet from")
	}
	return best, nil
}
