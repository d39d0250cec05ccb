package container

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// configureNICs gives the container's NICs their static addresses and
// default routes through rtnl, a NETLINK_ROUTE socket made inside the
// container's network namespace (ctinit.NewNetNS): the daemon talks to
// that namespace without any of its threads entering it, and without
// running ip(8). Links are brought up first (a route via a gateway needs
// its link up). NICs on DHCP or manual are left to the container.
func configureNICs(rtnl int, nics []nic) error {
	seq := uint32(0)
	for _, n := range nics {
		if n.IP == "" || n.IP == "dhcp" || n.IP == "manual" {
			if n.Gateway == "" {
				continue
			}
		}
		ifr, err := unix.NewIfreq(n.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		// Device ioctls on a netlink socket act on the socket's namespace.
		if err := unix.IoctlIfreq(rtnl, unix.SIOCGIFINDEX, ifr); err != nil {
			return fmt.Errorf("find %s in the container: %w", n.Name, err)
		}
		index := ifr.Uint32()
		if err := unix.IoctlIfreq(rtnl, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("bring %s up: %w", n.Name, err)
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		if err := unix.IoctlIfreq(rtnl, unix.SIOCSIFFLAGS, ifr); err != nil {
			return fmt.Errorf("bring %s up: %w", n.Name, err)
		}
		if n.IP != "" && n.IP != "dhcp" && n.IP != "manual" {
			p, err := netip.ParsePrefix(n.IP)
			if err != nil {
				return fmt.Errorf("address %q: %w", n.IP, err)
			}
			seq++
			if err := request(rtnl, seq, unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, addrMsg(p, index)); err != nil {
				return fmt.Errorf("add address %s to %s: %w", n.IP, n.Name, err)
			}
		}
		if n.Gateway != "" {
			gw, err := netip.ParseAddr(n.Gateway)
			if err != nil {
				return fmt.Errorf("gateway %q: %w", n.Gateway, err)
			}
			seq++
			if err := request(rtnl, seq, unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, routeMsg(gw, index)); err != nil {
				return fmt.Errorf("add default route via %s on %s: %w", n.Gateway, n.Name, err)
			}
		}
	}
	return nil
}

// attr appends a netlink attribute (struct rtattr, padded to 4 bytes).
func attr(b []byte, typ uint16, val []byte) []byte {
	l := unix.SizeofRtAttr + len(val)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// addrMsg is an RTM_NEWADDR body: struct ifaddrmsg and the address.
func addrMsg(p netip.Prefix, index uint32) []byte {
	a := p.Addr()
	b := []byte{family(a), uint8(p.Bits()), 0, unix.RT_SCOPE_UNIVERSE}
	b = binary.NativeEndian.AppendUint32(b, index)
	if a.Is4() {
		b = attr(b, unix.IFA_LOCAL, a.AsSlice())
	}
	return attr(b, unix.IFA_ADDRESS, a.AsSlice())
}

// routeMsg is an RTM_NEWROUTE body for a default route via gw on index:
// struct rtmsg, the gateway and the output interface.
func routeMsg(gw netip.Addr, index uint32) []byte {
	b := []byte{family(gw), 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST}
	b = binary.NativeEndian.AppendUint32(b, 0) // flags
	b = attr(b, unix.RTA_GATEWAY, gw.AsSlice())
	return attr(b, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, index))
}

// request sends one netlink request with an acknowledgement asked for and
// returns the kernel's answer as an error (nil for success).
func request(fd int, seq uint32, typ uint16, flags uint16, body []byte) error {
	msg := binary.NativeEndian.AppendUint32(nil, uint32(unix.SizeofNlMsghdr+len(body)))
	msg = binary.NativeEndian.AppendUint16(msg, typ)
	msg = binary.NativeEndian.AppendUint16(msg, flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	msg = binary.NativeEndian.AppendUint32(msg, seq)
	msg = binary.NativeEndian.AppendUint32(msg, 0)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("short netlink answer")
			}
			if e := *(*int32)(unsafe.Pointer(&m.Data[0])); e != 0 {
				return unix.Errno(-e)
			}
			return nil
		}
	}
}
