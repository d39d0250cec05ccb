package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
)

// BOOTP operation codes (RFC 951).
const (
	OpRequest = 1
	OpReply   = 2
)

// DHCP message types (option 53, RFC 2132 §9.6).
const (
	Discover = 1
	Offer    = 2
	Request  = 3
	Decline  = 4
	Ack      = 5
	Nak      = 6
	Release  = 7
	Inform   = 8
)

// Option codes berth reads or writes.
const (
	OptPad            = 0
	OptSubnetMask     = 1
	OptRouter         = 3
	OptDNS            = 6
	OptHostname       = 12
	OptDomainName     = 15
	OptRootPath       = 17
	OptBroadcast      = 28
	OptVendorSpecific = 43
	OptRequestedIP    = 50
	OptLeaseTime      = 51
	OptOverload       = 52
	OptMessageType    = 53
	OptServerID       = 54
	OptParamRequest   = 55
	OptMaxMessageSize = 57
	OptRenewalTime    = 58
	OptRebindingTime  = 59
	OptVendorClass    = 60
	OptClientID       = 61
	OptTFTPServerName = 66
	OptBootfileName   = 67
	OptUserClass      = 77
	OptClientArch     = 93
	OptClientNDI      = 94
	OptClientGUID     = 97
	OptIPXEEncap      = 175
	OptEnd            = 255
)

// magicCookie starts the options field of a DHCP message (RFC 2131 §3).
var magicCookie = [4]byte{99, 130, 83, 99}

// headerLen is the fixed BOOTP header before the options (RFC 951).
const headerLen = 236

// minReplyLen is the smallest BOOTP message: some old clients (and RFC 1542
// relays) drop anything shorter than 300 bytes.
const minReplyLen = 300

// ErrMalformed is wrapped by every Parse error.
var ErrMalformed = errors.New("malformed DHCP/BOOTP packet")

// Message is one BOOTP or DHCP message. A message without the magic cookie
// or without option 53 is BOOTP (RFC 951); Type is then 0.
type Message struct {
	Op     byte
	HType  byte
	HLen   byte
	Hops   byte
	XID    uint32
	Secs   uint16
	Flags  uint16
	CIAddr netip.Addr
	YIAddr netip.Addr
	SIAddr netip.Addr
	GIAddr netip.Addr
	CHAddr [16]byte
	SName  string
	File   string
	// Cookie reports whether the options field began with the magic
	// cookie (RFC 1048 vendor extensions follow).
	Cookie bool
	// ForeignVendor reports a request whose vendor area began with some
	// other non-zero magic (CMU's, a vendor's own format): its BOOTP reply
	// carries no RFC 1048 extensions it could misread. A request with no
	// vendor area or a zero one (klibc's ipconfig sends a bare 236-byte
	// header) gets RFC 1048 extensions, as CMU bootpd's vm=auto does.
	ForeignVendor bool
	// Options holds every option by code; repeated options are
	// concatenated (RFC 3396). order keeps the encoding order.
	Options map[byte][]byte
	order   []byte
}

// Broadcast reports whether the client asked for broadcast replies (the B
// flag, RFC 1542).
func (m *Message) Broadcast() bool { return m.Flags&0x8000 != 0 }

// MAC returns the client hardware address (Ethernet: 6 bytes).
func (m *Message) MAC() net.HardwareAddr {
	n := int(m.HLen)
	if n > 16 {
		n = 16
	}
	return net.HardwareAddr(append([]byte(nil), m.CHAddr[:n]...))
}

// Type returns the DHCP message type, or 0 for a BOOTP message.
func (m *Message) Type() byte {
	if v := m.Options[OptMessageType]; len(v) == 1 {
		return v[0]
	}
	return 0
}

// Get returns option code's value and whether it is present.
func (m *Message) Get(code byte) ([]byte, bool) {
	v, ok := m.Options[code]
	return v, ok
}

// Set sets option code (replacing any value) and keeps the order in which
// options were first set.
func (m *Message) Set(code byte, v []byte) {
	if m.Options == nil {
		m.Options = map[byte][]byte{}
	}
	if _, ok := m.Options[code]; !ok {
		m.order = append(m.order, code)
	}
	m.Options[code] = v
}

// SetAddr sets an option holding one IPv4 address.
func (m *Message) SetAddr(code byte, a netip.Addr) {
	b := a.As4()
	m.Set(code, b[:])
}

// SetUint32 sets an option holding one 32-bit number.
func (m *Message) SetUint32(code byte, v uint32) {
	m.Set(code, binary.BigEndian.AppendUint32(nil, v))
}

// Addr returns an option holding one IPv4 address.
func (m *Message) Addr(code byte) (netip.Addr, bool) {
	v := m.Options[code]
	if len(v) != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(v)), true
}

// Parse decodes a BOOTP/DHCP message. It never panics; anything it cannot
// read is an error wrapping ErrMalformed.
func Parse(b []byte) (*Message, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte BOOTP header", ErrMalformed, len(b), headerLen)
	}
	m := &Message{
		Op: b[0], HType: b[1], HLen: b[2], Hops: b[3],
		XID:    binary.BigEndian.Uint32(b[4:8]),
		Secs:   binary.BigEndian.Uint16(b[8:10]),
		Flags:  binary.BigEndian.Uint16(b[10:12]),
		CIAddr: netip.AddrFrom4([4]byte(b[12:16])),
		YIAddr: netip.AddrFrom4([4]byte(b[16:20])),
		SIAddr: netip.AddrFrom4([4]byte(b[20:24])),
		GIAddr: netip.AddrFrom4([4]byte(b[24:28])),
	}
	if m.Op != OpRequest && m.Op != OpReply {
		return nil, fmt.Errorf("%w: op %d is neither request nor reply", ErrMalformed, m.Op)
	}
	if m.HLen > 16 {
		return nil, fmt.Errorf("%w: hardware address length %d > 16", ErrMalformed, m.HLen)
	}
	copy(m.CHAddr[:], b[28:44])
	sname, file := b[44:108], b[108:236]
	m.Options = map[byte][]byte{}
	opts := b[headerLen:]
	if len(opts) >= 4 && [4]byte(opts[:4]) != magicCookie && [4]byte(opts[:4]) != [4]byte{} {
		m.ForeignVendor = true
	}
	if len(opts) >= 4 && [4]byte(opts[:4]) == magicCookie {
		m.Cookie = true
		if err := m.parseOptions(opts[4:]); err != nil {
			return nil, err
		}
		if ov, ok := m.Options[OptOverload]; ok {
			if len(ov) != 1 || ov[0] < 1 || ov[0] > 3 {
				return nil, fmt.Errorf("%w: option overload (52) value %v", ErrMalformed, ov)
			}
			if ov[0]&1 != 0 {
				if err := m.parseOptions(file); err != nil {
					return nil, err
				}
				file = nil
			}
			if ov[0]&2 != 0 {
				if err := m.parseOptions(sname); err != nil {
					return nil, err
				}
				sname = nil
			}
		}
	}
	m.SName = cstring(sname)
	m.File = cstring(file)
	return m, nil
}

func cstring(b []byte) string {
	if i := indexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// parseOptions reads code/length/value triples until End. A missing End
// at the end of the main options field is tolerated (many clients pad the
// packet instead).
func (m *Message) parseOptions(b []byte) error {
	for i := 0; i < len(b); {
		code := b[i]
		switch code {
		case OptPad:
			i++
			continue
		case OptEnd:
			return nil
		}
		if i+1 >= len(b) {
			return fmt.Errorf("%w: option %d has no length byte", ErrMalformed, code)
		}
		n := int(b[i+1])
		if i+2+n > len(b) {
			return fmt.Errorf("%w: option %d claims %d bytes, %d left", ErrMalformed, code, n, len(b)-i-2)
		}
		v := b[i+2 : i+2+n]
		if old, ok := m.Options[code]; ok {
			m.Options[code] = append(append([]byte(nil), old...), v...)
		} else {
			m.Options[code] = append([]byte(nil), v...)
			m.order = append(m.order, code)
		}
		i += 2 + n
	}
	return nil
}

// Marshal encodes the message. Options longer than 255 bytes are split
// (RFC 3396); the result is padded to the 300-byte BOOTP minimum.
func (m *Message) Marshal() []byte {
	b := make([]byte, headerLen, 576)
	b[0], b[1], b[2], b[3] = m.Op, m.HType, m.HLen, m.Hops
	binary.BigEndian.PutUint32(b[4:], m.XID)
	binary.BigEndian.PutUint16(b[8:], m.Secs)
	binary.BigEndian.PutUint16(b[10:], m.Flags)
	for i, a := range []netip.Addr{m.CIAddr, m.YIAddr, m.SIAddr, m.GIAddr} {
		if a.Is4() {
			v := a.As4()
			copy(b[12+4*i:], v[:])
		}
	}
	copy(b[28:44], m.CHAddr[:])
	copy(b[44:107], m.SName)
	copy(b[108:235], m.File)
	if m.Cookie {
		b = append(b, magicCookie[:]...)
		for _, code := range m.codes() {
			v := m.Options[code]
			for first := true; first || len(v) > 0; first = false {
				n := min(len(v), 255)
				b = append(b, code, byte(n))
				b = append(b, v[:n]...)
				v = v[n:]
			}
		}
		b = append(b, OptEnd)
	}
	for len(b) < minReplyLen {
		b = append(b, 0)
	}
	return b
}

// codes returns the option codes in encoding order: message type first
// (some PXE ROMs expect it there), then in the order they were set.
func (m *Message) codes() []byte {
	seen := map[byte]bool{}
	var out []byte
	if _, ok := m.Options[OptMessageType]; ok {
		out = append(out, OptMessageType)
		seen[OptMessageType] = true
	}
	for _, c := range m.order {
		if _, ok := m.Options[c]; ok && !seen[c] {
			out = append(out, c)
			seen[c] = true
		}
	}
	var rest []byte
	for c := range m.Options {
		if !seen[c] && c != OptPad && c != OptEnd {
			rest = append(rest, c)
		}
	}
	sort.Slice(rest, func(i, j int) bool { return rest[i] < rest[j] })
	return append(out, rest...)
}

// ClientArch returns the first client system architecture (option 93,
// RFC 4578) and whether the client sent one.
func (m *Message) ClientArch() (uint16, bool) {
	v := m.Options[OptClientArch]
	if len(v) < 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(v), true
}

// VendorClass returns option 60 as a string.
func (m *Message) VendorClass() string { return string(m.Options[OptVendorClass]) }

// UserClasses returns the user class strings of option 77. Both the RFC
// 3004 form (length-prefixed strings) and the plain string many firmwares
// send (iPXE sends "iPXE") are understood.
func (m *Message) UserClasses() []string {
	v, ok := m.Options[OptUserClass]
	if !ok || len(v) == 0 {
		return nil
	}
	var out []string
	rest := v
	for len(rest) > 0 {
		n := int(rest[0])
		if n == 0 || n+1 > len(rest) {
			return []string{string(v)}
		}
		out = append(out, string(rest[1:1+n]))
		rest = rest[1+n:]
	}
	return out
}

// IsIPXE reports whether the client is iPXE: user class "iPXE" (option 77)
// or iPXE's encapsulated options (175).
func (m *Message) IsIPXE() bool {
	if _, ok := m.Options[OptIPXEEncap]; ok {
		return true
	}
	for _, c := range m.UserClasses() {
		if c == "iPXE" {
			return true
		}
	}
	return false
}

// IsPXE reports whether the client is a PXE ROM or UEFI network stack
// (vendor class "PXEClient…" or "HTTPClient…", or an architecture option).
func (m *Message) IsPXE() bool {
	vc := m.VendorClass()
	if strings.HasPrefix(vc, "PXEClient") || strings.HasPrefix(vc, "HTTPClient") {
		return true
	}
	_, ok := m.Options[OptClientArch]
	return ok
}

// Hostname returns option 12.
func (m *Message) Hostname() string { return string(m.Options[OptHostname]) }
