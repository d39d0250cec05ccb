// Package netboot is berth's network boot service: it composes the DHCP/
// BOOTP/ProxyDHCP server (dhcp), the TFTP server (tftp), HTTP boot with
// per-host iPXE scripts (httpboot) and the IPv6 router advertisements that
// keep iPXE from waiting for autoconfiguration, all fed by one host
// database (hostdb). It is off by default and serves only the interfaces
// named in its configuration, which lives in the store under
// netboot/config.
//
// It owns the sockets and their lifecycle (start with the daemon,
// restart on reconfiguration, stop on shutdown) and the counters behind
// `berth netboot status`; the protocol logic lives in the subpackages.
package netboot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/atomicfile"
	"github.com/berthhq/berth/internal/netboot/dhcp"
	"github.com/berthhq/berth/internal/netboot/diskless"
	"github.com/berthhq/berth/internal/netboot/hostdb"
	"github.com/berthhq/berth/internal/netboot/httpboot"
	"github.com/berthhq/berth/internal/netboot/tftp"
	"github.com/berthhq/berth/internal/store"
)

// ConfigKey is where the configuration lives in the store.
const ConfigKey = "netboot/config"

// DefaultHTTPPort is the HTTP boot port on served interfaces.
const DefaultHTTPPort = 8067

// DisklessPort is where diskless roots are exported (NBD's port).
const DisklessPort = 10809

// Default loaders, as Debian's ipxe package names them.
const (
	DefaultBIOS  = "undionly.kpxe"
	DefaultEFI64 = "ipxe.efi"
)

// Options configure a Service.
type Options struct {
	Store store.Store
	// DataDir holds the lease journal and the default boot root.
	DataDir string
	Log     *slog.Logger
	// LoaderDir is where Debian's ipxe package keeps its loaders
	// (default /usr/lib/ipxe); missing default loaders are copied from
	// it into the boot root when the service starts.
	LoaderDir string
	// Listen opens a UDP socket on an interface (default
	// dhcp.ListenUDP); tests may replace it.
	Listen func(ctx context.Context, iface string, port int) (*net.UDPConn, error)
}

// Service runs network boot on the configured interfaces.
type Service struct {
	o     Options
	log   *slog.Logger
	Hosts *hostdb.DB

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	running bool
	lastErr string
	cfg     wire.NetbootConfig
	addrs   map[string][]string
	dhcp    *dhcp.Server
	tftp    []*tftp.Server
	http    *httpboot.Handler
	nbd     *diskless.Server
	leases  *dhcp.Leases
}

// New opens the host database; Start serves.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Listen == nil {
		o.Listen = dhcp.ListenUDP
	}
	db, err := hostdb.Open(ctx, o.Store)
	if err != nil {
		return nil, fmt.Errorf("netboot host database: %w", err)
	}
	return &Service{o: o, log: o.Log, Hosts: db}, nil
}

// Config returns the stored configuration (disabled when never set).
func (s *Service) Config(ctx context.Context) (wire.NetbootConfig, error) {
	c, d, err := store.GetJSON[wire.NetbootConfig](ctx, s.o.Store, ConfigKey)
	if errors.Is(err, store.ErrNotFound) {
		return wire.NetbootConfig{}, nil
	}
	c.Digest = d
	return c, err
}

// ValidationError names configuration fields that are wrong.
type ValidationError struct{ Fields map[string]string }

func (e *ValidationError) Error() string {
	var parts []string
	for k, v := range e.Fields {
		parts = append(parts, k+": "+v)
	}
	return "invalid netboot configuration: " + strings.Join(parts, "; ")
}

// FieldErrors returns the per-field messages.
func (e *ValidationError) FieldErrors() map[string]string { return e.Fields }

// Enable adds or replaces one interface in the configuration, turns
// network boot on and (re)starts it. Nothing is stored when the interface
// cannot be served.
func (s *Service) Enable(ctx context.Context, in wire.NetbootEnable) (wire.NetbootConfig, error) {
	cfg, err := s.Config(ctx)
	if err != nil {
		return cfg, err
	}
	digest := cfg.Digest
	if _, err := s.scope(in.NetbootInterface, cfg); err != nil {
		return cfg, err
	}
	replaced := false
	for i, it := range cfg.Interfaces {
		if it.Name == in.Name {
			cfg.Interfaces[i] = in.NetbootInterface
			replaced = true
		}
	}
	if !replaced {
		cfg.Interfaces = append(cfg.Interfaces, in.NetbootInterface)
	}
	if in.Root != "" {
		if !filepath.IsAbs(in.Root) {
			return cfg, &ValidationError{map[string]string{"root": "must be an absolute directory path"}}
		}
		cfg.Root = in.Root
	}
	if in.HTTPPort != 0 {
		if in.HTTPPort < 1 || in.HTTPPort > 65535 {
			return cfg, &ValidationError{map[string]string{"http-port": "must be 1-65535"}}
		}
		cfg.HTTPPort = in.HTTPPort
	}
	cfg.Enabled = true
	return s.save(ctx, cfg, digest)
}

// Disable stops serving iface, or everything when iface is empty.
func (s *Service) Disable(ctx context.Context, iface string) (wire.NetbootConfig, error) {
	cfg, err := s.Config(ctx)
	if err != nil {
		return cfg, err
	}
	digest := cfg.Digest
	if iface == "" {
		cfg.Enabled = false
	} else {
		var keep []wire.NetbootInterface
		found := false
		for _, it := range cfg.Interfaces {
			if it.Name == iface {
				found = true
				continue
			}
			keep = append(keep, it)
		}
		if !found {
			return cfg, fmt.Errorf("interface %s is not served by netboot: %w", iface, store.ErrNotFound)
		}
		cfg.Interfaces = keep
		if len(keep) == 0 {
			cfg.Enabled = false
		}
	}
	return s.save(ctx, cfg, digest)
}

func (s *Service) save(ctx context.Context, cfg wire.NetbootConfig, digest string) (wire.NetbootConfig, error) {
	cond := store.Cond{Digest: digest}
	if digest == "" {
		cond = store.Cond{Create: true}
	}
	cfg.Digest = ""
	d, err := store.PutJSON(ctx, s.o.Store, ConfigKey, cfg, cond)
	if errors.Is(err, store.ErrExists) {
		err = store.ErrConflict
	}
	if err != nil {
		return cfg, fmt.Errorf("netboot configuration: %w", err)
	}
	cfg.Digest = d
	s.Stop()
	if cfg.Enabled {
		if err := s.Start(ctx); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// scope turns an interface's settings into a DHCP scope, reading the
// interface's IPv4 address from the system.
func (s *Service) scope(it wire.NetbootInterface, cfg wire.NetbootConfig) (dhcp.Scope, error) {
	bad := map[string]string{}
	sc := dhcp.Scope{Interface: it.Name, Proxy: it.Proxy, Domain: it.Domain, LeaseTime: time.Duration(it.LeaseTime) * time.Second}
	ifi, err := net.InterfaceByName(it.Name)
	if err != nil {
		bad["interface"] = fmt.Sprintf("%s: no such interface on this host (see 'ip link')", it.Name)
		return sc, &ValidationError{bad}
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			ones, _ := n.Mask.Size()
			ip, _ := netip.AddrFromSlice(n.IP.To4())
			sc.ServerIP, sc.Subnet = ip, netip.PrefixFrom(ip, ones).Masked()
			break
		}
	}
	if !sc.ServerIP.IsValid() {
		bad["interface"] = fmt.Sprintf("%s has no IPv4 address: give it one (ip addr add 10.0.0.1/24 dev %[1]s) so clients can reach berth", it.Name)
	}
	if it.Range != "" {
		a, b, ok := strings.Cut(it.Range, "-")
		start, err1 := netip.ParseAddr(strings.TrimSpace(a))
		end, err2 := netip.ParseAddr(strings.TrimSpace(b))
		switch {
		case !ok || err1 != nil || err2 != nil || !start.Is4() || !end.Is4() || end.Less(start):
			bad["range"] = fmt.Sprintf("%q is not FIRST-LAST with IPv4 addresses in order, e.g. 10.0.0.100-10.0.0.199", it.Range)
		case it.Proxy:
			bad["range"] = "a ProxyDHCP interface hands out no addresses: drop --range or --proxy"
		case sc.Subnet.IsValid() && (!sc.Subnet.Contains(start) || !sc.Subnet.Contains(end)):
			bad["range"] = fmt.Sprintf("%s is not inside %s, the subnet of %s", it.Range, sc.Subnet, it.Name)
		case sc.ServerIP.IsValid() && (dhcp.Range{Start: start, End: end}).Contains(sc.ServerIP):
			bad["range"] = fmt.Sprintf("%s contains berth's own address %s", it.Range, sc.ServerIP)
		default:
			sc.Ranges = []dhcp.Range{{Start: start, End: end}}
		}
	}
	if it.Router != "" {
		r, err := netip.ParseAddr(it.Router)
		if err != nil || !r.Is4() {
			bad["router"] = fmt.Sprintf("%q is not an IPv4 address", it.Router)
		}
		sc.Router = r
	}
	for _, d := range it.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil || !a.Is4() {
			bad["dns"] = fmt.Sprintf("%q is not an IPv4 address", d)
			continue
		}
		sc.DNS = append(sc.DNS, a)
	}
	if it.LeaseTime < 0 || (it.LeaseTime > 0 && it.LeaseTime < 60) {
		bad["lease-time"] = "at least 60 seconds (0 means 3600)"
	}
	if len(bad) > 0 {
		return sc, &ValidationError{bad}
	}
	port := cfg.HTTPPort
	if port == 0 {
		port = DefaultHTTPPort
	}
	sc.HTTPBase = "http://" + net.JoinHostPort(sc.ServerIP.String(), strconv.Itoa(port))
	sc.Boot = dhcp.Boot{BIOS: or(cfg.BIOS, DefaultBIOS), EFI64: or(cfg.EFI64, DefaultEFI64), ARM64: cfg.ARM64, HTTP: or(cfg.HTTPBoot, DefaultEFI64)}
	return sc, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Root is the directory served over TFTP and HTTP.
func (s *Service) Root(cfg wire.NetbootConfig) string {
	if cfg.Root != "" {
		return cfg.Root
	}
	return filepath.Join(s.o.DataDir, "netboot", "root")
}

// Start serves the stored configuration if it is enabled. An error is
// also kept for Status.
func (s *Service) Start(ctx context.Context) error {
	cfg, err := s.Config(ctx)
	if err != nil {
		return err
	}
	err = s.start(cfg)
	s.mu.Lock()
	s.cfg = cfg
	s.lastErr = ""
	if err != nil {
		s.lastErr = err.Error()
	}
	s.mu.Unlock()
	return err
}

func (s *Service) start(cfg wire.NetbootConfig) (err error) {
	if !cfg.Enabled || len(cfg.Interfaces) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return errors.New("netboot is already running")
	}
	var scopes []dhcp.Scope
	for _, it := range cfg.Interfaces {
		sc, err := s.scope(it, cfg)
		if err != nil {
			return fmt.Errorf("interface %s: %w", it.Name, err)
		}
		scopes = append(scopes, sc)
	}
	root := s.Root(cfg)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("netboot root: %w", err)
	}
	s.provideLoaders(root, cfg)
	if s.leases == nil {
		l, err := dhcp.OpenLeases(filepath.Join(s.o.DataDir, "netboot", "leases.journal"), nil)
		if err != nil {
			return err
		}
		s.leases = l
	}
	serverOf := map[string]netip.Addr{}
	for _, sc := range scopes {
		serverOf[sc.Interface] = sc.ServerIP
	}
	ds, err := dhcp.New(dhcp.Config{Scopes: scopes, Lookup: s.dhcpHost, Taken: s.taken, Leases: s.leases,
		Log: s.log.With("service", "dhcp"), Listen: s.o.Listen,
		ScriptURL: func(base string, mac net.HardwareAddr) string { return base + "/ipxe/" + mac.String() + ".ipxe" }})
	if err != nil {
		return err
	}
	hb, err := httpboot.New(httpboot.Config{Root: root, Lookup: s.httpHost, Log: s.log.With("service", "http")})
	if err != nil {
		return err
	}
	nbd, err := diskless.New(diskless.Config{ClientsDir: filepath.Join(s.o.DataDir, "netboot", "clients"),
		Image: func(mac net.HardwareAddr) (string, bool) { return s.image(root, mac) }, Log: s.log.With("service", "diskless")})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var closers []func()
	defer func() {
		if err != nil {
			cancel()
			for _, c := range closers {
				c()
			}
		}
	}()
	addrs := map[string][]string{}
	var wg sync.WaitGroup
	var tftps []*tftp.Server
	port := cfg.HTTPPort
	if port == 0 {
		port = DefaultHTTPPort
	}
	for _, sc := range scopes {
		ts, err := tftp.New(tftp.Config{Root: root, Log: s.log.With("service", "tftp", "interface", sc.Interface)})
		if err != nil {
			return err
		}
		tc, err := listenAddr(ctx, sc.Interface, sc.ServerIP, 69)
		if err != nil {
			return err
		}
		closers = append(closers, func() { tc.Close() })
		tftps = append(tftps, ts)
		wg.Add(1)
		go func() { defer wg.Done(); ts.Serve(ctx, tc); tc.Close() }()
		addrs["tftp"] = append(addrs["tftp"], tc.LocalAddr().String())

		hl, err := listenTCP(ctx, sc.Interface, net.JoinHostPort(sc.ServerIP.String(), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: hb, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		closers = append(closers, func() { hs.Close() })
		wg.Add(1)
		go func() { defer wg.Done(); hs.Serve(hl) }()
		context.AfterFunc(ctx, func() { hs.Close() })
		addrs["http"] = append(addrs["http"], "http://"+hl.Addr().String())
		nl, err := listenTCP(ctx, sc.Interface, net.JoinHostPort(sc.ServerIP.String(), strconv.Itoa(DisklessPort)))
		if err != nil {
			return err
		}
		closers = append(closers, func() { nl.Close() })
		wg.Add(1)
		go func() { defer wg.Done(); nbd.Serve(ctx, nl) }()
		addrs["diskless"] = append(addrs["diskless"], "nbd://"+nl.Addr().String())
		addrs["dhcp"] = append(addrs["dhcp"], sc.Interface+":67")
		if sc.Proxy {
			addrs["dhcp"] = append(addrs["dhcp"], sc.Interface+":4011")
		}
		if cfg.RouterAdvert == nil || *cfg.RouterAdvert {
			wg.Add(1)
			go func() {
				defer wg.Done()
				keepAdvertising(ctx, sc.Interface, s.log)
			}()
		}
	}
	ready := make(chan struct{})
	derr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		derr <- ds.Serve(ctx, ready)
	}()
	select {
	case <-ready:
	case err := <-derr:
		cancel()
		wg.Wait()
		return err
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	s.cancel, s.done, s.running = cancel, done, true
	s.dhcp, s.tftp, s.http, s.nbd, s.addrs = ds, tftps, hb, nbd, addrs
	var names []string
	for _, sc := range scopes {
		names = append(names, fmt.Sprintf("%s (%s, %s)", sc.Interface, sc.ServerIP, map[bool]string{true: "proxy", false: "dhcp"}[sc.Proxy]))
	}
	s.log.Info("netboot serving", "interfaces", strings.Join(names, ", "), "root", root)
	return nil
}

// StartRetrying is Start for the daemon: when the configuration is
// enabled but cannot be served yet (a bridge that comes up later in the
// host's boot), it tries again every interval in the background until it
// serves, the configuration is disabled, or ctx ends. The first error is
// returned for the log; `netboot status` shows the latest.
func (s *Service) StartRetrying(ctx context.Context, every time.Duration) error {
	err := s.Start(ctx)
	if err == nil {
		return nil
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.mu.Lock()
			running := s.running
			s.mu.Unlock()
			if running {
				return
			}
			cfg, cerr := s.Config(ctx)
			if cerr != nil || !cfg.Enabled {
				if cerr == nil {
					s.mu.Lock()
					s.lastErr = ""
					s.mu.Unlock()
					return
				}
				continue
			}
			if err := s.Start(ctx); err == nil {
				s.log.Info("netboot serving after retry")
				return
			}
		}
	}()
	return err
}

// Stop stops serving and waits for the servers to end.
func (s *Service) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel, s.done, s.running = nil, nil, false
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
		s.log.Info("netboot stopped")
	}
}

// Close stops serving and closes the lease journal.
func (s *Service) Close() {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leases != nil {
		s.leases.Close()
		s.leases = nil
	}
}

func (s *Service) dhcpHost(mac net.HardwareAddr) (dhcp.Host, bool) {
	h, ok := s.Hosts.Lookup(mac)
	if !ok {
		return dhcp.Host{}, false
	}
	d := dhcp.Host{Name: h.Name, BootFile: h.BootFile, RootPath: h.RootPath, IPXE: h.Kernel != ""}
	if d.RootPath == "" && h.Root != "" {
		// A diskless host's root path names berth's NBD server, so a
		// client configured by BOOTP/DHCP alone (no berth.nbd= on a
		// command line from berth) finds its root.
		s.mu.Lock()
		server := s.serverFor(h)
		s.mu.Unlock()
		if server.IsValid() {
			d.RootPath = diskless.RootPath(net.JoinHostPort(server.String(), strconv.Itoa(DisklessPort)))
		}
	}
	d.IP, _ = netip.ParseAddr(h.IP)
	d.NextServer, _ = netip.ParseAddr(h.NextServer)
	for k, v := range h.Options {
		if b, err := hostdb.EncodeOption(k, v); err == nil {
			n, _ := strconv.Atoi(k)
			if d.Options == nil {
				d.Options = map[byte][]byte{}
			}
			d.Options[byte(n)] = b
		}
	}
	return d, true
}

func (s *Service) taken(ip netip.Addr) bool {
	str := ip.String()
	for _, h := range s.Hosts.Snapshot() {
		if h.IP == str {
			return true
		}
	}
	return false
}

func (s *Service) httpHost(mac net.HardwareAddr) (httpboot.Host, bool) {
	h, ok := s.Hosts.Lookup(mac)
	if !ok || h.Kernel == "" {
		return httpboot.Host{}, false
	}
	hb := httpboot.Host{MAC: mac, Name: h.Name, Kernel: h.Kernel, Initrd: h.Initrd, Cmdline: h.Cmdline}
	if h.Root != "" {
		// The diskless initramfs finds its root from berth.nbd=: the
		// server's address on the interface the host boots from.
		s.mu.Lock()
		server := s.serverFor(h)
		s.mu.Unlock()
		if server.IsValid() {
			hb.Cmdline = strings.TrimSpace(hb.Cmdline + " " + diskless.KernelArgs(net.JoinHostPort(server.String(), strconv.Itoa(DisklessPort))))
		}
	}
	return hb, true
}

// serverFor returns berth's address on the network of host h (its fixed
// address's subnet, else the first served interface); s.mu held.
func (s *Service) serverFor(h wire.NetbootHost) netip.Addr {
	ip, _ := netip.ParseAddr(h.IP)
	var first netip.Addr
	for _, it := range s.cfg.Interfaces {
		sc, err := s.scope(it, s.cfg)
		if err != nil {
			continue
		}
		if ip.IsValid() && sc.Subnet.Contains(ip) {
			return sc.ServerIP
		}
		if !first.IsValid() {
			first = sc.ServerIP
		}
	}
	return first
}

// ImagesDir is where diskless root images live: ROOT/images/NAME.img.
func ImagesDir(root string) string { return filepath.Join(root, "images") }

// image returns the shared root image of mac's host entry.
func (s *Service) image(root string, mac net.HardwareAddr) (string, bool) {
	h, ok := s.Hosts.Lookup(mac)
	if !ok || h.Root == "" {
		return "", false
	}
	for _, name := range []string{h.Root + ".img", h.Root} {
		p := filepath.Join(ImagesDir(root), name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, true
		}
	}
	s.log.Warn("diskless: host's root image not found", "mac", mac.String(), "root", h.Root, "dir", ImagesDir(root))
	return "", false
}

// Status reports configuration, listeners and counters.
func (s *Service) Status(ctx context.Context) (wire.NetbootStatus, error) {
	cfg, err := s.Config(ctx)
	if err != nil {
		return wire.NetbootStatus{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := wire.NetbootStatus{Enabled: cfg.Enabled, Running: s.running, Error: s.lastErr, Interfaces: cfg.Interfaces,
		Addresses: s.addrs, Hosts: len(s.Hosts.Snapshot()), Services: map[string]wire.NetbootServiceStats{}}
	if !s.running {
		st.Addresses = nil
	}
	if s.leases != nil {
		now := time.Now()
		for _, l := range s.leases.List() {
			if l.State == dhcp.StateBound && l.Active(now) {
				st.Leases++
			}
		}
	}
	if s.dhcp != nil {
		d := s.dhcp.Stats()
		st.Services["dhcp"] = wire.NetbootServiceStats{"received": d.Received, "malformed": d.Malformed, "discovers": d.Discovers,
			"offers": d.Offers, "requests": d.Requests, "acks": d.Acks, "naks": d.Naks, "declines": d.Declines, "releases": d.Releases,
			"informs": d.Informs, "bootp_replies": d.BOOTPReplies, "proxy_offers": d.ProxyOffers, "proxy_acks": d.ProxyAcks,
			"ignored": d.Ignored, "pool_exhausted": d.PoolFull, "errors": d.Errors}
	}
	if len(s.tftp) > 0 {
		t := wire.NetbootServiceStats{}
		for _, ts := range s.tftp {
			x := ts.Stats()
			t["requests"] += x.Requests
			t["transfers"] += x.TransfersOK
			t["failed"] += x.TransfersFailed
			t["bytes"] += x.Bytes
			t["retransmits"] += x.Retransmits
			t["errors"] += x.Errors
			t["refused"] += x.Refused
			t["malformed"] += x.Malformed
		}
		st.Services["tftp"] = t
	}
	if s.nbd != nil {
		n := s.nbd.Stats()
		st.Services["diskless"] = wire.NetbootServiceStats{"connections": n.Connections, "exports": n.Exports, "refused": n.Refused,
			"active": uint64(max(n.Active, 0)), "bytes_read": n.BytesRead, "bytes_written": n.BytesWritten, "flushes": n.Flushes, "errors": n.Errors}
	}
	if s.http != nil {
		h := s.http.Stats()
		st.Services["http"] = wire.NetbootServiceStats{"requests": h.Requests, "scripts": h.Scripts, "unknown_hosts": h.UnknownHosts,
			"transfers": h.Files, "range_requests": h.RangeRequests, "bytes": h.Bytes, "not_found": h.NotFound, "refused": h.Refused}
	}
	return st, nil
}

// Leases lists the DHCP leases (expired ones marked so).
func (s *Service) Leases() []wire.NetbootLease {
	s.mu.Lock()
	l := s.leases
	s.mu.Unlock()
	if l == nil {
		if le, err := dhcp.OpenLeases(filepath.Join(s.o.DataDir, "netboot", "leases.journal"), nil); err == nil {
			s.mu.Lock()
			if s.leases == nil {
				s.leases = le
			} else {
				le.Close()
			}
			l = s.leases
			s.mu.Unlock()
		} else {
			return nil
		}
	}
	now := time.Now()
	out := []wire.NetbootLease{}
	for _, x := range l.List() {
		state := x.State
		if state != dhcp.StateReleased && !x.Active(now) {
			state = "expired"
		}
		out = append(out, wire.NetbootLease{IP: x.IP.String(), MAC: x.MAC, Hostname: x.Hostname, Interface: x.Interface, Expires: x.Expires, State: state})
	}
	return out
}

// provideLoaders copies the default loaders (undionly.kpxe, ipxe.efi)
// from Debian's ipxe package into root when root lacks them, atomically,
// so PXE clients work without a manual step. An existing file is never
// replaced.
func (s *Service) provideLoaders(root string, cfg wire.NetbootConfig) {
	dir := s.o.LoaderDir
	if dir == "" {
		dir = "/usr/lib/ipxe"
	}
	for _, name := range []string{or(cfg.BIOS, DefaultBIOS), or(cfg.EFI64, DefaultEFI64)} {
		dst := filepath.Join(root, name)
		if _, err := os.Lstat(dst); err == nil || strings.Contains(name, "/") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if err := atomicfile.WriteFile(dst, data, 0o644); err != nil {
			s.log.Warn("netboot: cannot provide loader", "file", dst, "err", err)
			continue
		}
		s.log.Info("netboot: loader copied into the boot root", "file", dst, "from", dir)
	}
}
