package dhcp

import (
	"net/netip"
	"testing"
)

// FuzzParse checks that Parse never panics and that what it accepts
// re-encodes to something it accepts again with the same options.
func FuzzParse(f *testing.F) {
	f.Add(request(macA, Discover, map[byte][]byte{OptVendorClass: []byte("PXEClient:Arch:00000:UNDI:002001"), OptClientArch: {0, 0}}).Marshal())
	f.Add(request(macA, 0, nil).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		m2, err := Parse(m.Marshal())
		if err != nil {
			t.Fatalf("re-parse of an accepted message failed: %v", err)
		}
		if m2.Type() != m.Type() || m2.XID != m.XID || m2.MAC().String() != m.MAC().String() {
			t.Fatalf("round trip changed the message")
		}
		_ = m.UserClasses()
		_, _ = m.ClientArch()
	})
}

// FuzzHandle feeds packets to a server (regular and proxy scopes): it
// must never panic, and whatever it answers must parse.
func FuzzHandle(f *testing.F) {
	f.Add(request(macA, Discover, map[byte][]byte{OptUserClass: []byte("iPXE")}).Marshal(), uint8(0))
	f.Add(request(macA, Request, map[byte][]byte{OptRequestedIP: {10, 9, 0, 100}}).Marshal(), uint8(1))
	f.Add(request(macA, 0, nil).Marshal(), uint8(2))
	s, sc := testServer(f, map[string]Host{macA.String(): {Name: "a", IP: netip.MustParseAddr("10.9.0.5"), IPXE: true}}, false)
	p, psc := testServer(f, nil, true)
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		var out []byte
		switch which % 3 {
		case 0:
			out, _ = s.Handle(sc, b, netip.MustParseAddrPort("0.0.0.0:68"), 67)
		case 1:
			out, _ = p.Handle(psc, b, netip.MustParseAddrPort("10.9.0.9:68"), 67)
		default:
			out, _ = p.Handle(psc, b, netip.MustParseAddrPort("10.9.0.9:68"), 4011)
		}
		if out != nil {
			if _, err := Parse(out); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
		}
	})
}
