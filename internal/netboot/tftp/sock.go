package tftp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sock is a transfer's connected UDP socket used with plain blocking
// system calls. A lock-step transfer is one send and one receive per
// block; blocking in recv(2) wakes the goroutine straight from the kernel
// instead of through the runtime's poller, which on loopback is the
// difference between ~60% and ~100% of a C server's packet rate. Receive
// waits are bounded by SO_RCVTIMEO; closing the socket's read side
// (shutdown) wakes a waiting receive when the transfer is cancelled.
type sock struct {
	fd      int
	rcvtimo time.Duration // SO_RCVTIMEO as last set
	closed  atomic.Bool
}

// errTimeout is returned by sock.read when nothing arrived in time.
var errTimeout = errors.New("timed out")

// dialSock opens a UDP socket bound to local's IP (any port) and connected
// to remote.
func dialSock(local net.IP, remote *net.UDPAddr) (*sock, error) {
	family := syscall.AF_INET
	if remote.IP.To4() == nil {
		family = syscall.AF_INET6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	s := &sock{fd: fd}
	la, err := sockaddr(family, local, 0, "")
	if err == nil {
		err = os.NewSyscallError("bind", syscall.Bind(fd, la))
	}
	if err == nil {
		var ra syscall.Sockaddr
		ra, err = sockaddr(family, remote.IP, remote.Port, remote.Zone)
		if err == nil {
			err = os.NewSyscallError("connect", syscall.Connect(fd, ra))
		}
	}
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return s, nil
}

func sockaddr(family int, ip net.IP, port int, zone string) (syscall.Sockaddr, error) {
	if family == syscall.AF_INET {
		sa := &syscall.SockaddrInet4{Port: port}
		if ip != nil && !ip.IsUnspecified() {
			ip4 := ip.To4()
			if ip4 == nil {
				return nil, fmt.Errorf("address %v is not IPv4", ip)
			}
			copy(sa.Addr[:], ip4)
		}
		return sa, nil
	}
	sa := &syscall.SockaddrInet6{Port: port}
	if ip != nil && !ip.IsUnspecified() {
		copy(sa.Addr[:], ip.To16())
	}
	if zone != "" {
		if ifi, err := net.InterfaceByName(zone); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa, nil
}

// setSendBuffer asks for at least n bytes of send buffer, past the
// net.core.wmem_max limit when running as root.
func (s *sock) setSendBuffer(n int) {
	if syscall.SetsockoptInt(s.fd, syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, n) != nil {
		_ = syscall.SetsockoptInt(s.fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
	}
}

// write sends one datagram, waiting briefly when the queue is full rather
// than losing the packet.
func (s *sock) write(b []byte) error {
	for {
		_, err := syscall.Write(s.fd, b)
		switch {
		case err == nil:
			return nil
		case err == syscall.EINTR:
		case err == syscall.ENOBUFS || err == syscall.EAGAIN:
			time.Sleep(50 * time.Microsecond)
		case err == syscall.ECONNREFUSED:
			return fmt.Errorf("client went away: %w", err)
		default:
			return os.NewSyscallError("send", err)
		}
	}
}

// read receives one datagram, waiting until deadline (give or take 1/16
// of the wait; an early expiry waits again for the rest). SO_RCVTIMEO is set again only when the wait
// differs from the last one by more than that, so a lock-step transfer,
// which waits the same timeout after every block, sets it once.
func (s *sock) read(b []byte, deadline time.Time) (int, error) {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, errTimeout
		}
		if d := left - s.rcvtimo; d > s.rcvtimo/16 || -d > s.rcvtimo/16 {
			tv := syscall.NsecToTimeval(left.Nanoseconds())
			if tv.Sec == 0 && tv.Usec == 0 {
				tv.Usec = 1
			}
			if err := syscall.SetsockoptTimeval(s.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
				return 0, os.NewSyscallError("setsockopt", err)
			}
			s.rcvtimo = left
		}
		n, err := syscall.Read(s.fd, b)
		switch {
		case err == nil && n == 0 && s.closed.Load():
			return 0, net.ErrClosed
		case err == nil:
			return n, nil
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			// SO_RCVTIMEO expired; the loop checks the deadline.
		case err == syscall.ECONNREFUSED:
			return 0, fmt.Errorf("client went away: %w", err)
		default:
			return 0, os.NewSyscallError("recv", err)
		}
	}
}

// wake makes a waiting read return (used on cancellation).
func (s *sock) wake() {
	s.closed.Store(true)
	_ = syscall.Shutdown(s.fd, syscall.SHUT_RD)
}

func (s *sock) close() error { return syscall.Close(s.fd) }

// writeBatch sends the datagrams described by msgs with sendmmsg(2),
// calling again only for those the kernel did not take, so a window costs
// one system call instead of one per block.
func (s *sock) writeBatch(msgs []unix.Mmsghdr) error {
	for sent := 0; sent < len(msgs); {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&msgs[sent])), uintptr(len(msgs)-sent), 0, 0, 0)
		switch {
		case errno == 0:
			sent += int(n)
		case errno == unix.EINTR:
		case errno == unix.ENOBUFS || errno == unix.EAGAIN:
			time.Sleep(50 * time.Microsecond)
		case errno == unix.ECONNREFUSED:
			return fmt.Errorf("client went away: %w", errno)
		case errno == unix.EFAULT:
			// The kernel could not read the file's mapping.
			return fmt.Errorf("%w: %w", errShrunk, errno)
		default:
			return os.NewSyscallError("sendmmsg", errno)
		}
	}
	return nil
}
