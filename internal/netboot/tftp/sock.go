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

// sock is a transfer's connected UDP socket (send/recv, no addresses per
// packet). It waits in one of two ways:
//
//   - Blocking system calls (the default, up to Config.MaxThreads
//     transfers). A lock-step transfer is one send and one receive per
//     block; blocking in recv(2) wakes the goroutine straight from the
//     kernel instead of through the runtime's poller, which on loopback is
//     the difference between ~50% and 100% of a C server's packet rate.
//     Receive waits are bounded by SO_RCVTIMEO; closing the socket's read
//     side (shutdown) wakes a waiting receive when the transfer is
//     cancelled. The price is an OS thread per waiting transfer.
//   - Non-blocking, waiting in the runtime's netpoller (transfers beyond
//     Config.MaxThreads), so hundreds of transfers do not hold hundreds of
//     threads. The read deadline is moved only when it is off by more than
//     1/16 of the wait, so the runtime's timers are not touched per block.
type sock struct {
	fd      int
	rcvtimo time.Duration // the wait SO_RCVTIMEO or the deadline was last set for
	closed  atomic.Bool   // wake was called

	// Poller mode: the socket is non-blocking and waits in the runtime's
	// netpoller instead of in the kernel.
	f  *os.File
	rc syscall.RawConn
	dl time.Time // the read deadline as last set
}

// errTimeout is returned by sock.read when nothing arrived in time.
var errTimeout = errors.New("timed out")

// dialSock opens a UDP socket bound to local's IP (any port) and connected
// to remote. With poll, the socket waits in the runtime's netpoller.
func dialSock(local net.IP, remote *net.UDPAddr, poll bool) (*sock, error) {
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
	if poll {
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(fd)
			return nil, err
		}
		s.f = os.NewFile(uintptr(fd), "tftp")
		s.rc, err = s.f.SyscallConn()
		if err != nil {
			s.f.Close()
			return nil, err
		}
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
// of the wait; an early expiry waits again for the rest). SO_RCVTIMEO or
// the netpoller's deadline is moved only when it is off by more than
// that, so a lock-step transfer, which waits the same timeout after every
// block, sets SO_RCVTIMEO once and the netpoller's deadline about once per
// timeout.
func (s *sock) read(b []byte, deadline time.Time) (int, error) {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, errTimeout
		}
		// SO_RCVTIMEO is relative to the start of each recv, the
		// netpoller's deadline absolute.
		d := left - s.rcvtimo
		if s.f != nil {
			d = deadline.Sub(s.dl)
		}
		if d > left/16 || -d > left/16 {
			if err := s.setReadTimeout(left, deadline); err != nil {
				return 0, err
			}
		}
		if s.closed.Load() {
			return 0, net.ErrClosed
		}
		n, err := s.recv(b)
		switch {
		case s.closed.Load():
			return 0, net.ErrClosed
		case err == nil:
			return n, nil
		case err == syscall.EINTR:
		case err == syscall.EAGAIN || errors.Is(err, os.ErrDeadlineExceeded):
			// The wait expired; the loop checks the deadline.
		case err == syscall.ECONNREFUSED:
			return 0, fmt.Errorf("client went away: %w", err)
		default:
			return 0, os.NewSyscallError("recv", err)
		}
	}
}

func (s *sock) setReadTimeout(left time.Duration, deadline time.Time) error {
	s.rcvtimo, s.dl = left, deadline
	if s.f != nil {
		if err := s.f.SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("set read deadline: %w", err)
		}
		return nil
	}
	tv := syscall.NsecToTimeval(left.Nanoseconds())
	if tv.Sec == 0 && tv.Usec == 0 {
		tv.Usec = 1
	}
	return os.NewSyscallError("setsockopt", syscall.SetsockoptTimeval(s.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv))
}

// recv is one recv(2), blocking or through the netpoller.
func (s *sock) recv(b []byte) (int, error) {
	if s.f == nil {
		return syscall.Read(s.fd, b)
	}
	var n int
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		n, errno = int(r), e
		return e != syscall.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// wake makes a waiting read return (used on cancellation).
func (s *sock) wake() {
	s.closed.Store(true)
	if s.f != nil {
		_ = s.f.SetReadDeadline(time.Unix(1, 0))
		return
	}
	_ = syscall.Shutdown(s.fd, syscall.SHUT_RD)
}

func (s *sock) close() error {
	if s.f != nil {
		return s.f.Close()
	}
	return syscall.Close(s.fd)
}

// writeBatch sends the datagrams described by msgs with sendmmsg(2),
// calling again only for those the kernel did not take, so a window costs
// one system call instead of one per block. It returns how many messages
// were sent.
func (s *sock) writeBatch(msgs []unix.Mmsghdr) (int, error) {
	sent := 0
	for sent < len(msgs) {
		n, errno := s.sendmmsg(msgs[sent:])
		switch {
		case errno == 0:
			sent += n
		case errno == unix.EINTR:
		case errno == unix.ENOBUFS || errno == unix.EAGAIN:
			time.Sleep(50 * time.Microsecond)
		case errno == unix.ECONNREFUSED:
			return sent, fmt.Errorf("client went away: %w", errno)
		case errno == unix.EFAULT:
			// The kernel could not read the file's mapping.
			return sent, fmt.Errorf("%w: %w", errShrunk, errno)
		default:
			return sent, os.NewSyscallError("sendmmsg", errno)
		}
	}
	return sent, nil
}

// sendmmsg is one sendmmsg(2), blocking or through the netpoller.
func (s *sock) sendmmsg(msgs []unix.Mmsghdr) (int, syscall.Errno) {
	if s.f == nil {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		return int(n), errno
	}
	var n uintptr
	var errno syscall.Errno
	if err := s.rc.Write(func(fd uintptr) bool {
		n, _, errno = unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		return errno != unix.EAGAIN
	}); err != nil {
		return 0, unix.EBADF
	}
	return int(n), errno
}
