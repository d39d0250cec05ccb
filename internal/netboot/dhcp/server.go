package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Client system architectures (option 93, RFC 4578 and the IANA registry).
const (
	ArchBIOS     = 0
	ArchEFIIA32  = 6
	ArchEFIBC    = 7
	ArchEFIX64   = 9
	ArchEFIARM32 = 10
	ArchEFIARM64 = 11
	ArchHTTPX64  = 16
	ArchHTTPA64  = 19
)

// Host is what the host database says about one MAC.
type Host struct {
	Name string
	// IP is the fixed address; zero means a pool address.
	IP netip.Addr
	// BootFile is given to non-iPXE clients (and to iPXE clients when the
	// host has no iPXE script) over TFTP.
	BootFile   string
	NextServer netip.Addr
	RootPath   string
	// IPXE says the host has an iPXE script (a kernel to boot): iPXE
	// clients get Scope.ScriptURL instead of a loader.
	IPXE bool
	// Options are extra DHCP options by code.
	Options map[byte][]byte
}

// Boot names the default loaders per client architecture, relative to
// the TFTP root (HTTP is a URL path below the scope's HTTPBase).
type Boot struct {
	BIOS  string // arch 0, e.g. undionly.kpxe
	EFI32 string // arch 6
	EFI64 string // arch 7 and 9, e.g. ipxe.efi
	ARM64 string // arch 11
	HTTP  string // arch 16/19 (UEFI HTTP boot): path served over HTTP
}

// Scope is the DHCP service on one interface.
type Scope struct {
	Interface string
	// ServerIP is berth's address on the interface: server identifier,
	// next server and the host of HTTP URLs.
	ServerIP netip.Addr
	Subnet   netip.Prefix
	Router   netip.Addr
	DNS      []netip.Addr
	Domain   string
	Ranges   []Range
	// LeaseTime of dynamic leases (default 1 hour).
	LeaseTime time.Duration
	// Proxy answers PXE clients with boot options only, next to another
	// DHCP server, on ports 67 and 4011.
	Proxy bool
	// HTTPBase is the URL prefix of berth's HTTP boot service on this
	// interface, e.g. http://10.0.0.1:8080.
	HTTPBase string
	Boot     Boot
}

// Config configures a Server.
type Config struct {
	Scopes []Scope
	// Lookup returns the static host entry of a MAC.
	Lookup func(mac net.HardwareAddr) (Host, bool)
	// Taken reports whether an address belongs to a static host (so the
	// pool never hands it out).
	Taken func(ip netip.Addr) bool
	// ScriptURL returns the iPXE script URL of mac below base
	// (default base + "/ipxe/" + mac + ".ipxe").
	ScriptURL func(base string, mac net.HardwareAddr) string
	Leases    *Leases
	Log       *slog.Logger
	// Listen opens the socket of an interface and port (default
	// ListenUDP); tests use it to open sockets in a network namespace.
	Listen func(ctx context.Context, iface string, port int) (*net.UDPConn, error)
}

// Stats are the server's counters since it started.
type Stats struct {
	Received     uint64 `json:"received"`
	Malformed    uint64 `json:"malformed"`
	Discovers    uint64 `json:"discovers"`
	Offers       uint64 `json:"offers"`
	Requests     uint64 `json:"requests"`
	Acks         uint64 `json:"acks"`
	Naks         uint64 `json:"naks"`
	Declines     uint64 `json:"declines"`
	Releases     uint64 `json:"releases"`
	Informs      uint64 `json:"informs"`
	BOOTPReplies uint64 `json:"bootp_replies"`
	ProxyOffers  uint64 `json:"proxy_offers"`
	ProxyAcks    uint64 `json:"proxy_acks"`
	Ignored      uint64 `json:"ignored"`
	PoolFull     uint64 `json:"pool_exhausted"`
	Errors       uint64 `json:"errors"`
}

type counters struct {
	received, malformed, discovers, offers, requests, acks, naks, declines,
	releases, informs, bootp, proxyOffers, proxyAcks, ignored, poolFull, errors atomic.Uint64
}

// Server answers DHCP, BOOTP and ProxyDHCP requests on its scopes'
// interfaces only.
type Server struct {
	cfg Config
	log *slog.Logger
	c   counters
}

// New checks cfg and returns a server; Serve starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Lookup == nil {
		cfg.Lookup = func(net.HardwareAddr) (Host, bool) { return Host{}, false }
	}
	if cfg.Listen == nil {
		cfg.Listen = ListenUDP
	}
	if cfg.ScriptURL == nil {
		cfg.ScriptURL = func(base string, mac net.HardwareAddr) string { return base + "/ipxe/" + mac.String() + ".ipxe" }
	}
	for i := range cfg.Scopes {
		sc := &cfg.Scopes[i]
		if sc.Interface == "" {
			return nil, errors.New("dhcp scope without an interface")
		}
		if !sc.ServerIP.Is4() {
			return nil, fmt.Errorf("dhcp scope %s: server address %v is not IPv4", sc.Interface, sc.ServerIP)
		}
		if sc.LeaseTime <= 0 {
			sc.LeaseTime = time.Hour
		}
		if len(sc.Ranges) > 0 && cfg.Leases == nil && !sc.Proxy {
			return nil, fmt.Errorf("dhcp scope %s: a pool needs a lease database", sc.Interface)
		}
	}
	return &Server{cfg: cfg, log: cfg.Log}, nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.c
	return Stats{Received: c.received.Load(), Malformed: c.malformed.Load(), Discovers: c.discovers.Load(),
		Offers: c.offers.Load(), Requests: c.requests.Load(), Acks: c.acks.Load(), Naks: c.naks.Load(),
		Declines: c.declines.Load(), Releases: c.releases.Load(), Informs: c.informs.Load(),
		BOOTPReplies: c.bootp.Load(), ProxyOffers: c.proxyOffers.Load(), ProxyAcks: c.proxyAcks.Load(),
		Ignored: c.ignored.Load(), PoolFull: c.poolFull.Load(), Errors: c.errors.Load()}
}

// ListenUDP opens a UDP socket on port bound to iface alone
// (SO_BINDTODEVICE, set before bind), with SO_BROADCAST and SO_REUSEADDR
// so that other servers bound to other interfaces can share the port.
func ListenUDP(ctx context.Context, iface string, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			serr = unix.BindToDevice(int(fd), iface)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		return nil, fmt.Errorf("listen on %s udp/%d: %w", iface, port, err)
	}
	return pc.(*net.UDPConn), nil
}

// Serve opens the sockets of every scope and answers requests until ctx
// ends. ready, when not nil, is closed once all sockets are open.
func (s *Server) Serve(ctx context.Context, ready chan<- struct{}) error {
	var conns []*net.UDPConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	type job struct {
		sc   *Scope
		conn *net.UDPConn
		port int
	}
	var jobs []job
	for i := range s.cfg.Scopes {
		sc := &s.cfg.Scopes[i]
		ports := []int{67}
		if sc.Proxy {
			ports = append(ports, 4011)
		}
		for _, p := range ports {
			c, err := s.cfg.Listen(ctx, sc.Interface, p)
			if err != nil {
				closeAll()
				return err
			}
			conns = append(conns, c)
			jobs = append(jobs, job{sc, c, p})
		}
	}
	if ready != nil {
		close(ready)
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, j.sc, j.conn, j.port)
		}()
	}
	<-ctx.Done()
	closeAll()
	wg.Wait()
	return nil
}

// serveConn reads packets and answers each in its own goroutine (bounded),
// so that lease commits of concurrent clients share an fsync.
func (s *Server) serveConn(ctx context.Context, sc *Scope, conn *net.UDPConn, port int) {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, 4096)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.c.errors.Add(1)
			s.log.Warn("dhcp read", "interface", sc.Interface, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			reply, dst := s.Handle(sc, pkt, src, port)
			if reply == nil {
				return
			}
			if _, err := conn.WriteToUDPAddrPort(reply, dst); err != nil {
				s.c.errors.Add(1)
				s.log.Warn("dhcp send", "interface", sc.Interface, "to", dst.String(), "err", err)
			}
		}()
	}
}

var bcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Handle answers one packet received on sc's interface at port from src.
// It returns the reply and where to send it, or nil to stay silent. It is
// exported for tests and the fuzz target; it never panics on bad input.
func (s *Server) Handle(sc *Scope, pkt []byte, src netip.AddrPort, port int) ([]byte, netip.AddrPort) {
	s.c.received.Add(1)
	m, err := Parse(pkt)
	if err != nil {
		s.c.malformed.Add(1)
		s.log.Debug("dhcp: dropped malformed packet", "interface", sc.Interface, "from", src.String(), "err", err)
		return nil, netip.AddrPort{}
	}
	if m.Op != OpRequest || m.HType != 1 || m.HLen != 6 {
		s.c.ignored.Add(1)
		return nil, netip.AddrPort{}
	}
	var reply *Message
	if sc.Proxy {
		reply = s.proxy(sc, m, port)
	} else if port == 67 {
		reply = s.serve(sc, m)
	}
	if reply == nil {
		return nil, netip.AddrPort{}
	}
	return reply.Marshal(), s.dest(m, reply, src, port)
}

// dest picks the reply address as RFC 2131 §4.1 says: a relay gets it on
// port 67; a configured client at its address; everyone else by
// broadcast (berth does not inject ARP entries, so it broadcasts even
// without the B flag, which every client accepts).
func (s *Server) dest(m, reply *Message, src netip.AddrPort, port int) netip.AddrPort {
	switch {
	case port == 4011:
		return src
	case m.GIAddr.IsValid() && !m.GIAddr.IsUnspecified():
		return netip.AddrPortFrom(m.GIAddr, 67)
	case reply.Type() != Nak && m.CIAddr.IsValid() && !m.CIAddr.IsUnspecified():
		return netip.AddrPortFrom(m.CIAddr, 68)
	}
	return netip.AddrPortFrom(bcast, 68)
}

func (s *Server) newReply(m *Message, typ byte, sc *Scope) *Message {
	r := &Message{Op: OpReply, HType: m.HType, HLen: m.HLen, XID: m.XID, Flags: m.Flags, GIAddr: m.GIAddr,
		CHAddr: m.CHAddr, Cookie: m.Cookie, CIAddr: netip.IPv4Unspecified(), YIAddr: netip.IPv4Unspecified(), SIAddr: netip.IPv4Unspecified()}
	if typ != 0 {
		r.Cookie = true
		r.Set(OptMessageType, []byte{typ})
		r.SetAddr(OptServerID, sc.ServerIP)
	} else {
		r.Cookie = !m.ForeignVendor
	}
	return r
}

func (s *Server) serve(sc *Scope, m *Message) *Message {
	mac := m.MAC()
	host, known := s.cfg.Lookup(mac)
	switch m.Type() {
	case 0:
		return s.bootp(sc, m, host, known)
	case Discover:
		s.c.discovers.Add(1)
		ip, ok := s.address(sc, m, host, known)
		if !ok {
			return nil
		}
		r := s.newReply(m, Offer, sc)
		r.YIAddr = ip
		s.fill(sc, m, r, host, known, true)
		s.c.offers.Add(1)
		s.logBoot("dhcp offer", sc, m, r)
		return r
	case Request:
		s.c.requests.Add(1)
		return s.request(sc, m, host, known)
	case Decline:
		if id, ok := m.Addr(OptServerID); !ok || id != sc.ServerIP {
			return nil
		}
		ip, ok := m.Addr(OptRequestedIP)
		if !ok || known && host.IP.IsValid() {
			return nil
		}
		s.c.declines.Add(1)
		s.log.Warn("dhcp decline: client found the address in use", "mac", mac.String(), "ip", ip.String(), "interface", sc.Interface)
		if s.cfg.Leases != nil && inRanges(sc.Ranges, ip) {
			if err := s.cfg.Leases.Decline(mac.String(), ip); err != nil {
				s.c.errors.Add(1)
				s.log.Error("dhcp decline", "err", err)
			}
		}
		return nil
	case Release:
		if id, ok := m.Addr(OptServerID); ok && id != sc.ServerIP {
			return nil
		}
		s.c.releases.Add(1)
		if s.cfg.Leases != nil {
			if ok, err := s.cfg.Leases.Release(mac.String(), m.CIAddr); err != nil {
				s.c.errors.Add(1)
				s.log.Error("dhcp release", "err", err)
			} else if ok {
				s.log.Info("dhcp release", "mac", mac.String(), "ip", m.CIAddr.String(), "interface", sc.Interface)
			}
		}
		return nil
	case Inform:
		s.c.informs.Add(1)
		r := s.newReply(m, Ack, sc)
		r.CIAddr = m.CIAddr
		s.fill(sc, m, r, host, known, false)
		s.c.acks.Add(1)
		return r
	}
	s.c.ignored.Add(1)
	return nil
}

// address chooses the address to offer: the host's fixed one, else one
// from the pool.
func (s *Server) address(sc *Scope, m *Message, host Host, known bool) (netip.Addr, bool) {
	if known && host.IP.IsValid() {
		if sc.Subnet.IsValid() && !sc.Subnet.Contains(host.IP) {
			s.c.ignored.Add(1)
			s.log.Warn("dhcp: host's fixed address is not on this interface's subnet", "mac", m.MAC().String(), "ip", host.IP.String(), "interface", sc.Interface, "subnet", sc.Subnet.String())
			return netip.Addr{}, false
		}
		return host.IP, true
	}
	if len(sc.Ranges) == 0 || s.cfg.Leases == nil {
		s.c.ignored.Add(1)
		s.log.Debug("dhcp: unknown client and no pool", "mac", m.MAC().String(), "interface", sc.Interface)
		return netip.Addr{}, false
	}
	req, _ := m.Addr(OptRequestedIP)
	ip, ok := s.cfg.Leases.Allocate(m.MAC().String(), sc.Ranges, req, s.cfg.Taken, 30*time.Second)
	if !ok {
		s.c.poolFull.Add(1)
		s.log.Warn("dhcp: address pool exhausted", "mac", m.MAC().String(), "interface", sc.Interface)
	}
	return ip, ok
}

func (s *Server) request(sc *Scope, m *Message, host Host, known bool) *Message {
	mac := m.MAC()
	id, hasID := m.Addr(OptServerID)
	if hasID && id != sc.ServerIP {
		// SELECTING another server's offer.
		if s.cfg.Leases != nil {
			s.cfg.Leases.Unoffer(mac.String())
		}
		return nil
	}
	ip, ok := m.Addr(OptRequestedIP)
	if !ok {
		ip = m.CIAddr
	}
	nak := func(why string) *Message {
		s.c.naks.Add(1)
		s.log.Info("dhcp nak", "mac", mac.String(), "ip", ip.String(), "interface", sc.Interface, "why", why)
		r := s.newReply(m, Nak, sc)
		r.Set(56, []byte(why))
		return r
	}
	if !ip.Is4() || ip.IsUnspecified() {
		return nak("no requested address")
	}
	if sc.Subnet.IsValid() && !sc.Subnet.Contains(ip) {
		return nak("address not on this network")
	}
	var lease time.Duration
	switch {
	case known && host.IP.IsValid():
		if ip != host.IP {
			return nak("wrong address for this host")
		}
		lease = sc.LeaseTime
	case s.cfg.Leases != nil && len(sc.Ranges) > 0:
		if !s.cfg.Leases.CanBind(mac.String(), ip, sc.Ranges) || (s.cfg.Taken != nil && s.cfg.Taken(ip)) {
			if !hasID && !inRanges(sc.Ranges, ip) {
				return nil // INIT-REBOOT for an address we know nothing of: stay silent (RFC 2131 §4.3.2)
			}
			return nak("address not available")
		}
		lease = sc.LeaseTime
		name := host.Name
		if name == "" {
			name = m.Hostname()
		}
		if _, err := s.cfg.Leases.Bind(mac.String(), ip, sc.Interface, name, lease); err != nil {
			// Never acknowledge what is not on disk.
			s.c.errors.Add(1)
			s.log.Error("dhcp: cannot record lease", "mac", mac.String(), "ip", ip.String(), "err", err)
			return nil
		}
	default:
		return nil
	}
	r := s.newReply(m, Ack, sc)
	r.YIAddr = ip
	r.CIAddr = m.CIAddr
	s.fill(sc, m, r, host, known, true)
	s.c.acks.Add(1)
	s.logBoot("dhcp ack", sc, m, r)
	return r
}

// bootp answers a BOOTP request (RFC 951/1542): only known hosts with a
// fixed address, no option 53, vendor extensions (RFC 1497) unless the
// client's vendor area holds another format (Message.ForeignVendor).
func (s *Server) bootp(sc *Scope, m *Message, host Host, known bool) *Message {
	if !known || !host.IP.IsValid() {
		s.c.ignored.Add(1)
		s.log.Info("bootp: unknown client ignored (BOOTP needs a host entry with an address)", "mac", m.MAC().String(), "interface", sc.Interface)
		return nil
	}
	r := s.newReply(m, 0, sc)
	r.YIAddr = host.IP
	r.CIAddr = m.CIAddr
	s.fill(sc, m, r, host, known, false)
	delete(r.Options, OptServerID)
	s.c.bootp.Add(1)
	s.logBoot("bootp reply", sc, m, r)
	return r
}

// fill adds the network and boot options of a reply.
func (s *Server) fill(sc *Scope, m, r *Message, host Host, known, lease bool) {
	if sc.Subnet.IsValid() {
		bits := sc.Subnet.Bits()
		mask := net.CIDRMask(bits, 32)
		r.Set(OptSubnetMask, mask)
		last := u32(sc.Subnet.Masked().Addr()) | ^uint32(0)>>bits
		if bits == 32 {
			last = u32(sc.Subnet.Addr())
		}
		r.SetAddr(OptBroadcast, fromU32(last))
	}
	if sc.Router.IsValid() {
		r.SetAddr(OptRouter, sc.Router)
	}
	if len(sc.DNS) > 0 {
		var b []byte
		for _, a := range sc.DNS {
			v := a.As4()
			b = append(b, v[:]...)
		}
		r.Set(OptDNS, b)
	}
	if sc.Domain != "" {
		r.Set(OptDomainName, []byte(sc.Domain))
	}
	if lease && r.Type() != 0 {
		t := uint32(sc.LeaseTime / time.Second)
		r.SetUint32(OptLeaseTime, t)
		r.SetUint32(OptRenewalTime, t/2)
		r.SetUint32(OptRebindingTime, t*7/8)
	}
	if known {
		if host.Name != "" {
			r.Set(OptHostname, []byte(host.Name))
		}
		if host.RootPath != "" {
			r.Set(OptRootPath, []byte(host.RootPath))
		}
		for code, v := range host.Options {
			if code != OptPad && code != OptEnd && code != OptMessageType && code != OptServerID {
				r.Set(code, v)
			}
		}
	}
	s.boot(sc, m, r, host, known)
}

// boot chooses what the client boots:
//   - iPXE with a host script: the script's HTTP URL (never a loader
//     again, so iPXE does not chainload itself forever);
//   - a host boot file: that file over TFTP;
//   - a PXE client: the loader for its architecture (UEFI HTTP clients a
//     URL and vendor class "HTTPClient");
//   - iPXE without a script: nothing.
//
// PXE clients also get vendor class "PXEClient" and PXE discovery control
// "use this boot file", so they do not wait for a ProxyDHCP offer.
func (s *Server) boot(sc *Scope, m, r *Message, host Host, known bool) {
	next := sc.ServerIP
	if known && host.NextServer.IsValid() {
		next = host.NextServer
	}
	file := ""
	switch {
	case m.IsIPXE() && known && host.IPXE && sc.HTTPBase != "":
		file = s.cfg.ScriptURL(sc.HTTPBase, m.MAC())
	case known && host.BootFile != "":
		file = host.BootFile
	case m.IsIPXE():
	case m.IsPXE():
		arch, _ := m.ClientArch()
		switch arch {
		case ArchBIOS:
			file = sc.Boot.BIOS
		case ArchEFIIA32:
			file = sc.Boot.EFI32
		case ArchEFIBC, ArchEFIX64:
			file = sc.Boot.EFI64
		case ArchEFIARM64:
			file = sc.Boot.ARM64
		case ArchHTTPX64, ArchHTTPA64:
			if sc.Boot.HTTP != "" && sc.HTTPBase != "" {
				file = sc.HTTPBase + "/" + strings.TrimPrefix(sc.Boot.HTTP, "/")
			}
		}
	}
	if strings.HasPrefix(m.VendorClass(), "HTTPClient") {
		r.Set(OptVendorClass, []byte("HTTPClient"))
	} else if m.IsPXE() && r.Type() != 0 {
		r.Set(OptVendorClass, []byte("PXEClient"))
		// PXE discovery control 8: boot the file named in this reply
		// (no boot server discovery, no menu).
		r.Set(OptVendorSpecific, []byte{6, 1, 8, 255})
	}
	if guid, ok := m.Get(OptClientGUID); ok && m.IsPXE() {
		r.Set(OptClientGUID, guid)
	}
	if file == "" {
		return
	}
	r.SIAddr = next
	if len(file) < 128 {
		r.File = file
	}
	if r.Type() != 0 {
		r.Set(OptBootfileName, []byte(file))
		r.Set(OptTFTPServerName, []byte(next.String()))
	}
}

// proxy answers as a ProxyDHCP server: PXE clients only, boot options
// only, never an address. DISCOVERs on port 67 get an OFFER; REQUESTs
// (and INFORMs) on port 4011 get an ACK sent back to their source.
func (s *Server) proxy(sc *Scope, m *Message, port int) *Message {
	if !m.IsPXE() {
		s.c.ignored.Add(1)
		return nil
	}
	mac := m.MAC()
	host, known := s.cfg.Lookup(mac)
	var typ byte
	switch {
	case port == 67 && m.Type() == Discover:
		typ = Offer
	case port == 4011 && (m.Type() == Request || m.Type() == Inform):
		typ = Ack
	default:
		s.c.ignored.Add(1)
		return nil
	}
	r := s.newReply(m, typ, sc)
	if port == 4011 {
		r.CIAddr = m.CIAddr
	}
	// Only boot options: no address, no lease, no network settings.
	s.boot(sc, m, r, host, known)
	if r.File == "" && len(r.Options[OptBootfileName]) == 0 {
		s.c.ignored.Add(1)
		return nil
	}
	if known && host.RootPath != "" {
		r.Set(OptRootPath, []byte(host.RootPath))
	}
	if typ == Offer {
		s.c.proxyOffers.Add(1)
		s.logBoot("proxydhcp offer", sc, m, r)
	} else {
		s.c.proxyAcks.Add(1)
		s.logBoot("proxydhcp ack", sc, m, r)
	}
	return r
}

func (s *Server) logBoot(msg string, sc *Scope, m, r *Message) {
	if !s.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	arch, hasArch := m.ClientArch()
	attrs := []any{"mac", m.MAC().String(), "interface", sc.Interface}
	if r.YIAddr.IsValid() && !r.YIAddr.IsUnspecified() {
		attrs = append(attrs, "ip", r.YIAddr.String())
	}
	if f := string(r.Options[OptBootfileName]); f != "" || r.File != "" {
		if f == "" {
			f = r.File
		}
		attrs = append(attrs, "bootfile", f, "next_server", r.SIAddr.String())
	}
	if hasArch {
		attrs = append(attrs, "arch", arch)
	}
	if m.IsIPXE() {
		attrs = append(attrs, "ipxe", true)
	}
	s.log.Info(msg, attrs...)
}
