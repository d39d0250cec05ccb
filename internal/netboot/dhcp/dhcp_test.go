package dhcp

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	serverIP = netip.MustParseAddr("10.9.0.1")
	macA     = net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0xa}
	macB     = net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0xb}
)

// request builds a client message.
func request(mac net.HardwareAddr, typ byte, opts map[byte][]byte) *Message {
	m := &Message{Op: OpRequest, HType: 1, HLen: 6, XID: 0x1234, Cookie: true,
		CIAddr: netip.IPv4Unspecified(), YIAddr: netip.IPv4Unspecified(), SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified()}
	copy(m.CHAddr[:], mac)
	if typ != 0 {
		m.Set(OptMessageType, []byte{typ})
	}
	for c, v := range opts {
		m.Set(c, v)
	}
	return m
}

func TestMessageRoundTrip(t *testing.T) {
	m := request(macA, Discover, map[byte][]byte{
		OptVendorClass: []byte("PXEClient:Arch:00000:UNDI:002001"),
		OptClientArch:  {0, 0},
		OptUserClass:   []byte("iPXE"),
		OptHostname:    bytes.Repeat([]byte("h"), 300), // split into two options (RFC 3396)
	})
	m.File = "undionly.kpxe"
	b := m.Marshal()
	if len(b) < minReplyLen {
		t.Fatalf("encoded %d bytes, want at least %d", len(b), minReplyLen)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type() != Discover || got.MAC().String() != macA.String() || got.File != "undionly.kpxe" {
		t.Fatalf("round trip: type %d mac %s file %q", got.Type(), got.MAC(), got.File)
	}
	if diff := cmp.Diff(m.Options, got.Options); diff != "" {
		t.Fatalf("options mismatch (-want +got):\n%s", diff)
	}
	if !got.IsPXE() || !got.IsIPXE() {
		t.Fatal("PXE/iPXE detection failed")
	}
}

func TestParseErrors(t *testing.T) {
	good := request(macA, Discover, nil).Marshal()
	trunc := append([]byte(nil), good[:headerLen+4]...)
	trunc = append(trunc, OptHostname, 10, 'a')
	badOp := append([]byte(nil), good...)
	badOp[0] = 9
	badOverload := append([]byte(nil), good[:headerLen+4]...)
	badOverload = append(badOverload, OptOverload, 1, 7, OptEnd)
	for name, b := range map[string][]byte{
		"short": good[:100], "truncated option": trunc, "bad op": badOp, "bad overload": badOverload,
	} {
		if _, err := Parse(b); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestOverload(t *testing.T) {
	b := request(macA, 0, nil).Marshal()
	b = b[:headerLen+4]
	b = append(b, OptOverload, 1, 1, OptEnd)
	// the file field now holds options: a hostname
	copy(b[108:], []byte{OptHostname, 3, 'a', 'b', 'c', OptMessageType, 1, Request, OptEnd})
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Hostname() != "abc" || m.Type() != Request || m.File != "" {
		t.Fatalf("overloaded file field: host %q type %d file %q", m.Hostname(), m.Type(), m.File)
	}
}

func TestUserClasses(t *testing.T) {
	for _, tt := range []struct {
		in   []byte
		want []string
	}{
		{[]byte("iPXE"), []string{"iPXE"}},
		{[]byte{4, 'i', 'P', 'X', 'E'}, []string{"iPXE"}},
		{[]byte{2, 'a', 'b', 1, 'c'}, []string{"ab", "c"}},
	} {
		m := request(macA, Discover, map[byte][]byte{OptUserClass: tt.in})
		if diff := cmp.Diff(tt.want, m.UserClasses()); diff != "" {
			t.Errorf("%q: mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
}

func newLeases(t testing.TB, dir string, now func() time.Time) *Leases {
	t.Helper()
	l, err := OpenLeases(filepath.Join(dir, "leases"), now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLeasesPersistAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clock := time.Unix(1_700_000_000, 0)
	now := func() time.Time { return clock }
	r := []Range{{netip.MustParseAddr("10.9.0.10"), netip.MustParseAddr("10.9.0.12")}}
	l := newLeases(t, dir, now)
	ip, ok := l.Allocate(macA.String(), r, netip.Addr{}, nil, time.Minute)
	if !ok {
		t.Fatal("no address")
	}
	if _, err := l.Bind(macA.String(), ip, "br0", "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// A crash mid-write leaves a torn record at the end.
	f, _ := os.OpenFile(filepath.Join(dir, "leases"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"ip":"10.9.0.11","mac":"52:54`)
	f.Close()

	l = newLeases(t, dir, now)
	defer l.Close()
	seen := map[netip.Addr]bool{ip: true}
	for _, mac := range []string{"52:54:00:00:01:01", "52:54:00:00:01:02"} {
		got, ok := l.Allocate(mac, r, ip, nil, time.Minute)
		if !ok || seen[got] {
			t.Fatalf("after restart %s got %v (ok %v); %v is leased", mac, got, ok, ip)
		}
		seen[got] = true
	}
	if _, ok := l.Allocate("52:54:00:00:01:03", r, netip.Addr{}, nil, time.Minute); ok {
		t.Fatal("a 3-address pool gave out a 4th address")
	}
	if again, ok := l.Allocate(macA.String(), r, netip.Addr{}, nil, time.Minute); !ok || again != ip {
		t.Fatalf("the lease holder got %v, want its own %v", again, ip)
	}
	// Expiry frees the address for others.
	clock = clock.Add(2 * time.Hour)
	if got, ok := l.Allocate("52:54:00:00:01:09", []Range{{ip, ip}}, netip.Addr{}, nil, time.Minute); !ok || got != ip {
		t.Fatalf("expired lease not reused: %v %v", got, ok)
	}
}

func TestLeasesReleaseDecline(t *testing.T) {
	dir := t.TempDir()
	clock := time.Unix(1_700_000_000, 0)
	l := newLeases(t, dir, func() time.Time { return clock })
	one := netip.MustParseAddr("10.9.0.10")
	r := []Range{{one, one}}
	if _, err := l.Bind(macA.String(), one, "br0", "", time.Hour); err != nil {
		t.Fatal(err)
	}
	if l.CanBind(macB.String(), one, r) {
		t.Fatal("B may bind A's address")
	}
	if ok, err := l.Release(macA.String(), one); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	if !l.CanBind(macB.String(), one, r) {
		t.Fatal("released address not free")
	}
	if err := l.Decline(macB.String(), one); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = newLeases(t, dir, func() time.Time { return clock })
	defer l.Close()
	if _, ok := l.Allocate(macA.String(), r, netip.Addr{}, nil, time.Minute); ok {
		t.Fatal("declined address handed out after restart")
	}
	clock = clock.Add(declineHold + time.Second)
	if _, ok := l.Allocate(macA.String(), r, netip.Addr{}, nil, time.Minute); !ok {
		t.Fatal("declined address never comes back")
	}
}

// TestLeasesConcurrentBind checks group commit: 200 concurrent binds all
// reach the journal.
func TestLeasesConcurrentBind(t *testing.T) {
	dir := t.TempDir()
	l := newLeases(t, dir, nil)
	r := []Range{{netip.MustParseAddr("10.9.1.0"), netip.MustParseAddr("10.9.1.255")}}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mac := net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}.String()
			ip, ok := l.Allocate(mac, r, netip.Addr{}, nil, time.Minute)
			if !ok {
				t.Error("pool exhausted")
				return
			}
			if _, err := l.Bind(mac, ip, "br0", "", time.Hour); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	l.Close()
	l = newLeases(t, dir, nil)
	defer l.Close()
	ips := map[netip.Addr]string{}
	for _, le := range l.List() {
		if le.State == StateBound {
			if other, dup := ips[le.IP]; dup {
				t.Fatalf("%v bound to %s and %s", le.IP, other, le.MAC)
			}
			ips[le.IP] = le.MAC
		}
	}
	if len(ips) != 200 {
		t.Fatalf("%d leases after reopen, want 200", len(ips))
	}
}

func testServer(t testing.TB, hosts map[string]Host, proxy bool) (*Server, *Scope) {
	t.Helper()
	l := newLeases(t, t.TempDir(), nil)
	t.Cleanup(func() { l.Close() })
	sc := Scope{Interface: "br0", ServerIP: serverIP, Subnet: netip.MustParsePrefix("10.9.0.0/24"),
		Router: serverIP, Ranges: []Range{{netip.MustParseAddr("10.9.0.100"), netip.MustParseAddr("10.9.0.200")}},
		Proxy: proxy, HTTPBase: "http://10.9.0.1:8080",
		Boot: Boot{BIOS: "undionly.kpxe", EFI64: "ipxe.efi", ARM64: "arm64/ipxe.efi", HTTP: "ipxe.efi"}}
	s, err := New(Config{Scopes: []Scope{sc}, Leases: l,
		Lookup: func(mac net.HardwareAddr) (Host, bool) { h, ok := hosts[mac.String()]; return h, ok },
		Taken: func(ip netip.Addr) bool {
			for _, h := range hosts {
				if h.IP == ip {
					return true
				}
			}
			return false
		}})
	if err != nil {
		t.Fatal(err)
	}
	return s, &s.cfg.Scopes[0]
}

func exchange(t *testing.T, s *Server, sc *Scope, m *Message, port int) (*Message, netip.AddrPort) {
	t.Helper()
	b, dst := s.Handle(sc, m.Marshal(), netip.MustParseAddrPort("0.0.0.0:68"), port)
	if b == nil {
		return nil, dst
	}
	r, err := Parse(b)
	if err != nil {
		t.Fatalf("server sent an unparsable reply: %v", err)
	}
	return r, dst
}

func TestBootSelection(t *testing.T) {
	fixed := netip.MustParseAddr("10.9.0.50")
	hosts := map[string]Host{
		macA.String(): {Name: "aldebaran", IP: fixed, IPXE: true, RootPath: "/srv/root"},
		macB.String(): {Name: "old", IP: netip.MustParseAddr("10.9.0.51"), BootFile: "vmlinux.nb", NextServer: netip.MustParseAddr("10.9.0.2")},
	}
	s, sc := testServer(t, hosts, false)
	pxe := func(arch uint16, vc string, extra map[byte][]byte) map[byte][]byte {
		o := map[byte][]byte{OptVendorClass: []byte(vc), OptClientArch: {byte(arch >> 8), byte(arch)}}
		for k, v := range extra {
			o[k] = v
		}
		return o
	}
	other := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0xc}
	for _, tt := range []struct {
		name      string
		mac       net.HardwareAddr
		opts      map[byte][]byte
		file      string
		vendor    string
		ip        string
		next      string
		wantReply bool
	}{
		{"BIOS PXE", other, pxe(0, "PXEClient:Arch:00000:UNDI:002001", nil), "undionly.kpxe", "PXEClient", "", "10.9.0.1", true},
		{"UEFI x64", other, pxe(7, "PXEClient:Arch:00007:UNDI:003016", nil), "ipxe.efi", "PXEClient", "", "10.9.0.1", true},
		{"UEFI x64 (9)", other, pxe(9, "PXEClient:Arch:00009:UNDI:003016", nil), "ipxe.efi", "PXEClient", "", "10.9.0.1", true},
		{"ARM64", other, pxe(11, "PXEClient:Arch:00011:UNDI:003000", nil), "arm64/ipxe.efi", "PXEClient", "", "10.9.0.1", true},
		{"UEFI HTTP", other, pxe(16, "HTTPClient:Arch:00016:UNDI:003001", nil), "http://10.9.0.1:8080/ipxe.efi", "HTTPClient", "", "10.9.0.1", true},
		{"iPXE without script: no loop", other, pxe(0, "PXEClient:Arch:00000:UNDI:002001", map[byte][]byte{OptUserClass: []byte("iPXE")}), "", "PXEClient", "", "", true},
		{"iPXE host gets its script", macA, pxe(0, "PXEClient:Arch:00000:UNDI:002001", map[byte][]byte{OptUserClass: []byte("iPXE")}), "http://10.9.0.1:8080/ipxe/52:54:00:00:00:0a.ipxe", "PXEClient", "10.9.0.50", "10.9.0.1", true},
		{"host before iPXE gets the BIOS loader", macA, pxe(0, "PXEClient:Arch:00000:UNDI:002001", nil), "undionly.kpxe", "PXEClient", "10.9.0.50", "10.9.0.1", true},
		{"host boot file and next server", macB, nil, "vmlinux.nb", "", "10.9.0.51", "10.9.0.2", true},
		{"plain client: no boot file", other, nil, "", "", "", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, dst := exchange(t, s, sc, request(tt.mac, Discover, tt.opts), 67)
			if r == nil {
				t.Fatal("no reply")
			}
			if r.Type() != Offer || dst.Addr() != bcast {
				t.Fatalf("type %d to %v", r.Type(), dst)
			}
			if got := string(r.Options[OptBootfileName]); got != tt.file {
				t.Errorf("boot file %q, want %q", got, tt.file)
			}
			if len(tt.file) < 128 && r.File != tt.file {
				t.Errorf("file field %q, want %q", r.File, tt.file)
			}
			if got := r.VendorClass(); got != tt.vendor {
				t.Errorf("vendor class %q, want %q", got, tt.vendor)
			}
			if tt.ip != "" && r.YIAddr.String() != tt.ip {
				t.Errorf("yiaddr %v, want %s", r.YIAddr, tt.ip)
			}
			if tt.next != "" && r.SIAddr.String() != tt.next {
				t.Errorf("siaddr %v, want %s", r.SIAddr, tt.next)
			}
		})
	}
}

func TestDORAAndNak(t *testing.T) {
	s, sc := testServer(t, nil, false)
	off, _ := exchange(t, s, sc, request(macA, Discover, nil), 67)
	if off == nil || !sc.Ranges[0].Contains(off.YIAddr) {
		t.Fatalf("offer %+v", off)
	}
	req := request(macA, Request, nil)
	req.SetAddr(OptRequestedIP, off.YIAddr)
	req.SetAddr(OptServerID, serverIP)
	ack, _ := exchange(t, s, sc, req, 67)
	if ack == nil || ack.Type() != Ack || ack.YIAddr != off.YIAddr {
		t.Fatalf("ack %+v", ack)
	}
	if lt, _ := ack.Get(OptLeaseTime); len(lt) != 4 {
		t.Fatal("no lease time")
	}
	// B asks for A's address: NAK.
	steal := request(macB, Request, nil)
	steal.SetAddr(OptRequestedIP, off.YIAddr)
	steal.SetAddr(OptServerID, serverIP)
	if nak, dst := exchange(t, s, sc, steal, 67); nak == nil || nak.Type() != Nak || dst.Addr() != bcast {
		t.Fatalf("stealing request got %+v", nak)
	}
	// A request for another server's offer is silent.
	other := request(macB, Request, nil)
	other.SetAddr(OptServerID, netip.MustParseAddr("10.9.0.254"))
	other.SetAddr(OptRequestedIP, netip.MustParseAddr("10.9.0.150"))
	if r, _ := exchange(t, s, sc, other, 67); r != nil {
		t.Fatal("answered a request meant for another server")
	}
	// RENEWING: unicast to ciaddr.
	renew := request(macA, Request, nil)
	renew.CIAddr = off.YIAddr
	if r, dst := exchange(t, s, sc, renew, 67); r == nil || r.Type() != Ack || dst.Addr() != off.YIAddr {
		t.Fatalf("renew: %+v to %v", r, dst)
	}
	st := s.Stats()
	if st.Offers != 1 || st.Acks != 2 || st.Naks != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBOOTP(t *testing.T) {
	hosts := map[string]Host{macA.String(): {Name: "aldebaran", IP: netip.MustParseAddr("10.9.0.100"), BootFile: "/tftpboot/vmlinux.nb", RootPath: "/tftpboot/10.9.0.100"}}
	s, sc := testServer(t, hosts, false)
	header := func() []byte {
		m := request(macA, 0, nil)
		m.Cookie = false
		return m.Marshal()[:headerLen]
	}
	// The request's vendor area (RFC 951's 64-byte vend field) decides
	// whether the reply carries RFC 1048 extensions.
	for _, tc := range []struct {
		name   string
		vend   []byte
		cookie bool
	}{
		{"RFC 1048 cookie (Linux kernel ipconfig)", append(append([]byte{}, magicCookie[:]...), OptEnd), true},
		{"no vendor area (klibc ipconfig: bare 236-byte header)", nil, true},
		{"zero vendor area (RFC 951 client)", make([]byte, 64), true},
		{"CMU vendor format", append([]byte("CMU\x00"), make([]byte, 60)...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := s.Handle(sc, append(header(), tc.vend...), netip.MustParseAddrPort("0.0.0.0:68"), 67)
			if b == nil {
				t.Fatal("no BOOTP reply")
			}
			r, err := Parse(b)
			if err != nil {
				t.Fatalf("unparsable reply: %v", err)
			}
			if _, has := r.Get(OptMessageType); has {
				t.Fatal("BOOTP reply carries option 53")
			}
			if r.YIAddr.String() != "10.9.0.100" || r.File != "/tftpboot/vmlinux.nb" || r.SIAddr != serverIP {
				t.Fatalf("reply yiaddr %v file %q siaddr %v", r.YIAddr, r.File, r.SIAddr)
			}
			if r.Cookie != tc.cookie {
				t.Fatalf("RFC 1048 extensions in the reply: %v, want %v", r.Cookie, tc.cookie)
			}
			if tc.cookie && (string(r.Options[OptRootPath]) != "/tftpboot/10.9.0.100" || len(r.Options[OptSubnetMask]) != 4) {
				t.Fatalf("root path %q, netmask %v", r.Options[OptRootPath], r.Options[OptSubnetMask])
			}
		})
	}
	if r, _ := exchange(t, s, sc, request(macB, 0, nil), 67); r != nil {
		t.Fatal("BOOTP reply to an unknown client")
	}
	if got := s.Stats().BOOTPReplies; got != 4 {
		t.Fatalf("bootp replies %d", got)
	}
}

func TestProxy(t *testing.T) {
	s, sc := testServer(t, nil, true)
	pxeOpts := map[byte][]byte{OptVendorClass: []byte("PXEClient:Arch:00000:UNDI:002001"), OptClientArch: {0, 0}, OptClientGUID: {0, 1, 2, 3}}
	off, _ := exchange(t, s, sc, request(macA, Discover, pxeOpts), 67)
	if off == nil || off.Type() != Offer || !off.YIAddr.IsUnspecified() || off.File != "undionly.kpxe" || off.VendorClass() != "PXEClient" {
		t.Fatalf("proxy offer %+v", off)
	}
	if _, has := off.Get(OptLeaseTime); has {
		t.Fatal("proxy offer carries a lease")
	}
	if r, _ := exchange(t, s, sc, request(macB, Discover, nil), 67); r != nil {
		t.Fatal("proxy answered a non-PXE client")
	}
	req := request(macA, Request, pxeOpts)
	req.CIAddr = netip.MustParseAddr("10.9.0.77")
	b, dst := s.Handle(sc, req.Marshal(), netip.MustParseAddrPort("10.9.0.77:4011"), 4011)
	ack, err := Parse(b)
	if err != nil || ack.Type() != Ack || ack.File != "undionly.kpxe" || dst.String() != "10.9.0.77:4011" {
		t.Fatalf("4011 ack %+v to %v (%v)", ack, dst, err)
	}
	if r, _ := exchange(t, s, sc, request(macA, Request, pxeOpts), 67); r != nil {
		t.Fatal("proxy answered a REQUEST on port 67")
	}
}

func TestMalformedCounted(t *testing.T) {
	s, sc := testServer(t, nil, false)
	for _, b := range [][]byte{nil, {1, 2, 3}, bytes.Repeat([]byte{0xff}, 400)} {
		if r, _ := s.Handle(sc, b, netip.MustParseAddrPort("1.2.3.4:68"), 67); r != nil {
			t.Fatal("answered garbage")
		}
	}
	if st := s.Stats(); st.Malformed != 3 {
		t.Fatalf("malformed = %d, want 3", st.Malformed)
	}
}
