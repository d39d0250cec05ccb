package ifupdown

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Problem is one validation error, tied to the line it is about.
type Problem struct {
	File  string
	Line  int
	Iface string
	Msg   string
}

func (p Problem) String() string {
	if p.Iface != "" {
		return fmt.Sprintf("%s:%d: iface %s: %s", p.File, p.Line, p.Iface, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// ValidationError lists every problem found; nothing was changed.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid network configuration (%d problem(s), nothing changed)", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

// FieldErrors maps "FILE:LINE" to the problems on that line, for the API.
func (e *ValidationError) FieldErrors() map[string]string {
	m := map[string]string{}
	for _, p := range e.Problems {
		k := fmt.Sprintf("%s:%d", p.File, p.Line)
		msg := p.Msg
		if p.Iface != "" {
			msg = "iface " + p.Iface + ": " + msg
		}
		if m[k] != "" {
			m[k] += "; " + msg
		} else {
			m[k] = msg
		}
	}
	return m
}

// BondModes are the seven bonding modes by name, with their numbers.
var BondModes = map[string]int{
	"balance-rr": 0, "active-backup": 1, "balance-xor": 2, "broadcast": 3,
	"802.3ad": 4, "balance-tlb": 5, "balance-alb": 6,
}

// BondMode returns the mode name for a name or number ("4" → "802.3ad").
func BondMode(v string) (string, bool) {
	if _, ok := BondModes[v]; ok {
		return v, true
	}
	if n, err := strconv.Atoi(v); err == nil {
		for k, m := range BondModes {
			if m == n {
				return k, true
			}
		}
	}
	return "", false
}

// XmitHashPolicies are the bonding driver's transmit hash policies.
var XmitHashPolicies = []string{"layer2", "layer2+3", "layer3+4", "encap2+3", "encap3+4", "vlan+srcmac"}

var (
	bridgeName    = regexp.MustCompile(`^vmbr(\d+)$`)
	vlanBridgeRe  = regexp.MustCompile(`^vmbr(\d+)v(\d+)$`)
	bondName      = regexp.MustCompile(`^bond\d+$`)
	physName      = regexp.MustCompile(`^(en|eth)[a-zA-Z0-9_]*$`)
	validIfname   = regexp.MustCompile(`^[^\s/:]+(:\d+)?$`)
	supportedMeth = []string{"static", "manual", "dhcp", "loopback", "auto"}
)

// ParseBool reads ifupdown2's yes/no, on/off and 1/0.
func ParseBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "yes", "on", "1", "true":
		return true, true
	case "no", "off", "0", "false":
		return false, true
	}
	return false, false
}

// ParseVIDs reads "2-4094" or "10 20 30-40" into ranges.
func ParseVIDs(v string) ([][2]int, error) {
	var out [][2]int
	for _, w := range strings.Fields(v) {
		lo, hi, rng := strings.Cut(w, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if rng {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 1 || b > 4094 || a > b {
			return nil, fmt.Errorf("VLAN IDs %q: use numbers or ranges within 1-4094 (e.g. 2-4094)", w)
		}
		out = append(out, [2]int{a, b})
	}
	return out, nil
}

// Validate checks the configuration and returns a *ValidationError listing
// every problem with its line, or nil. live names the interfaces that exist
// on the system (so that ports and slaves not in the file can be used); it
// may be nil.
func Validate(c *Config, live map[string]bool) error {
	var ps []Problem
	bad := func(i *Iface, o *Option, format string, args ...any) {
		f, n := i.Line()
		if o != nil && o.Line != nil && o.Line.Num > 0 {
			n = o.Line.Num
			for _, s := range i.Stanzas {
				if slices.Contains(s.Lines, o.Line) {
					f = s.File.Path
				}
			}
		}
		ps = append(ps, Problem{File: f, Line: n, Iface: i.Name, Msg: fmt.Sprintf(format, args...)})
	}
	exists := func(n string) bool { return c.Iface(n) != nil || live[n] }
	portOf := map[string]string{}
	slaveOf := map[string]string{}
	gateways := map[string]string{}

	for _, i := range c.Ifaces {
		if len(i.Name) > 15 {
			bad(i, nil, "name is %d characters long; Linux allows at most 15", len(i.Name))
		}
		if !validIfname.MatchString(i.Name) {
			bad(i, nil, "%q is not a valid interface name", i.Name)
		}
		for _, s := range i.Stanzas {
			h := &Option{Line: s.Lines[0]}
			if s.Family != "" && s.Family != "inet" && s.Family != "inet6" {
				bad(i, h, "address family %q: use inet or inet6", s.Family)
			}
			if s.Method != "" && !slices.Contains(supportedMeth, s.Method) {
				bad(i, h, "method %q is not supported: use %s", s.Method, strings.Join(supportedMeth, ", "))
			}
		}
		typ := i.Type()
		switch typ {
		case TypeBridge:
			if m := vlanBridgeRe.FindStringSubmatch(i.Name); m != nil {
				if n, _ := strconv.Atoi(m[1]); n > 4094 {
					bad(i, nil, "bridge number %d is out of range: bridges are vmbr0 to vmbr4094", n)
				}
				if v, _ := strconv.Atoi(m[2]); v < 1 || v > 4094 {
					bad(i, nil, "VLAN %d in the bridge name is out of range 1-4094", v)
				}
			} else if m := bridgeName.FindStringSubmatch(i.Name); m == nil || len(m[1]) > 1 && m[1][0] == '0' {
				bad(i, i.Opt("bridge-ports"), "bridges are named vmbrN (vmbr0 to vmbr4094) or vmbrNvVID for a VLAN bridge: rename %q", i.Name)
			} else if n, _ := strconv.Atoi(m[1]); n > 4094 {
				bad(i, nil, "bridge number %d is out of range: bridges are vmbr0 to vmbr4094", n)
			}
			o := i.Opt("bridge-ports")
			for _, p := range i.Ports() {
				switch {
				case p == i.Name:
					bad(i, o, "bridge-ports names the bridge itself")
				case !exists(p):
					bad(i, o, "bridge port %s does not exist: define 'iface %s inet manual' or fix the name", p, p)
				case portOf[p] != "":
					bad(i, o, "%s is already a port of %s: an interface can be in one bridge only", p, portOf[p])
				}
				if pi := c.Iface(p); pi != nil && pi.Type() == TypeBridge {
					bad(i, o, "%s is a bridge and cannot be a port of another bridge", p)
				}
				portOf[p] = i.Name
			}
			for _, k := range []string{"bridge-stp", "bridge-vlan-aware"} {
				if o := i.Opt(k); o != nil {
					if _, ok := ParseBool(o.Value); !ok {
						bad(i, o, "%s %q: use yes/no, on/off or 1/0", k, o.Value)
					}
				}
			}
			if o := i.Opt("bridge-disable-mac-learning"); o != nil {
				if _, ok := ParseBool(o.Value); !ok {
					bad(i, o, "bridge-disable-mac-learning %q: use 1 or 0", o.Value)
				}
			}
			if o := i.Opt("bridge-fd"); o != nil {
				if n, err := strconv.Atoi(o.Value); err != nil || n < 0 || n > 30 {
					bad(i, o, "bridge-fd %q: the forward delay is 0 to 30 seconds", o.Value)
				}
			}
			if o := i.Opt("bridge-vids"); o != nil {
				if _, err := ParseVIDs(o.Value); err != nil {
					bad(i, o, "bridge-vids: %v", err)
				}
				if aware, _ := ParseBool(valueOr(i, "bridge-vlan-aware", "no")); !aware {
					bad(i, o, "bridge-vids needs 'bridge-vlan-aware yes'")
				}
			}
		case TypeBond:
			if !bondName.MatchString(i.Name) {
				bad(i, i.Opt("bond-slaves"), "bonds are named bondN (bond0, bond1, …): rename %q", i.Name)
			}
			o := i.Opt("bond-slaves")
			for _, s := range i.Slaves() {
				switch {
				case !exists(s):
					bad(i, o, "bond slave %s does not exist: define 'iface %s inet manual' or fix the name", s, s)
				case slaveOf[s] != "":
					bad(i, o, "%s is already a slave of %s", s, slaveOf[s])
				}
				if si := c.Iface(s); si != nil && si.Type() != TypePhysical && si.Type() != TypeDummy {
					bad(i, o, "bond slave %s is a %s; slaves are physical NICs", s, si.Type())
				}
				slaveOf[s] = i.Name
			}
			if len(i.Slaves()) == 0 {
				bad(i, o, "a bond needs at least one slave in bond-slaves")
			}
			if o := i.Opt("bond-mode"); o != nil {
				if _, ok := BondMode(o.Value); !ok {
					bad(i, o, "bond-mode %q: use one of balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb (or 0-6)", o.Value)
				}
			}
			if o := i.Opt("bond-miimon"); o != nil {
				if n, err := strconv.Atoi(o.Value); err != nil || n < 0 {
					bad(i, o, "bond-miimon %q: give the link check interval in milliseconds (e.g. 100)", o.Value)
				}
			}
			if o := i.Opt("bond-xmit-hash-policy"); o != nil && !slices.Contains(XmitHashPolicies, o.Value) {
				bad(i, o, "bond-xmit-hash-policy %q: use one of %s", o.Value, strings.Join(XmitHashPolicies, ", "))
			}
		case TypeVLAN:
			raw, id, err := i.VLAN()
			o := i.Opt("vlan-raw-device")
			if err != nil {
				bad(i, o, "%v", err)
			} else {
				if id < 1 || id > 4094 {
					bad(i, o, "VLAN ID %d is out of range 1-4094", id)
				}
				if !exists(raw) {
					bad(i, o, "VLAN raw device %s does not exist", raw)
				}
			}
		case TypePhysical:
			if !physName.MatchString(i.Name) {
				bad(i, nil, "%q is not a known interface type: physical NICs are named en* or eth*, bridges vmbrN (with bridge-ports), bonds bondN (with bond-slaves), VLANs NAME.VID; for a dummy add 'link-type dummy'", i.Name)
			}
		}
		if o := i.Opt("mtu"); o != nil {
			if n, err := strconv.Atoi(o.Value); err != nil || n < 68 || n > 65535 {
				bad(i, o, "mtu %q: use a number from 68 to 65535", o.Value)
			}
		}
		for _, s := range i.Stanzas {
			for _, o := range s.Options() {
				o := o
				switch o.Key {
				case "address":
					if s.Method != "static" && s.Method != "" {
						bad(i, &o, "address on a %q stanza: addresses need 'inet static' (or inet6 static)", s.Method)
					}
					mask := ""
					if m := optIn(s, "netmask"); m != "" {
						mask = m
					}
					for _, a := range strings.Fields(o.Value) {
						p, err := ParseAddress(a, mask)
						if err != nil {
							bad(i, &o, "%v", err)
							continue
						}
						if s.Family == "inet" && !p.Addr().Is4() || s.Family == "inet6" && !p.Addr().Is6() {
							bad(i, &o, "address %s does not belong to family %s", a, s.Family)
						}
					}
				case "gateway":
					gw, err := netip.ParseAddr(o.Value)
					if err != nil {
						bad(i, &o, "gateway %q is not an IP address", o.Value)
						continue
					}
					fam := "inet"
					if gw.Is6() {
						fam = "inet6"
					}
					if s.Family != "" && s.Family != fam {
						bad(i, &o, "gateway %s does not belong to family %s", o.Value, s.Family)
					}
					if prev := gateways[fam]; prev != "" {
						bad(i, &o, "a second default gateway for %s (the first is on %s): keep one per address family", fam, prev)
					} else {
						gateways[fam] = i.Name
					}
				case "pre-up", "up", "post-up", "down", "pre-down", "post-down":
					if strings.TrimSpace(o.Value) == "" {
						bad(i, &o, "%s without a command", o.Key)
					}
				}
			}
		}
	}
	// Ports and slaves carry no addresses: the bridge or bond does.
	for _, i := range c.Ifaces {
		addrs, _ := i.Addresses()
		if len(addrs) == 0 {
			continue
		}
		if b := portOf[i.Name]; b != "" {
			bad(i, i.Opt("address"), "has an address but is a port of bridge %s: put the address on %s instead", b, b)
		}
		if b := slaveOf[i.Name]; b != "" {
			bad(i, i.Opt("address"), "has an address but is a slave of bond %s: put the address on %s instead", b, b)
		}
	}
	for s, b := range slaveOf {
		if p := portOf[s]; p != "" {
			if i := c.Iface(b); i != nil {
				bad(i, i.Opt("bond-slaves"), "slave %s is also a port of bridge %s: make the bond the bridge port instead", s, p)
			}
		}
	}
	if len(ps) == 0 {
		return nil
	}
	sort.SliceStable(ps, func(a, b int) bool {
		if ps[a].File != ps[b].File {
			return ps[a].File < ps[b].File
		}
		return ps[a].Line < ps[b].Line
	})
	return &ValidationError{Problems: ps}
}

func valueOr(i *Iface, key, def string) string {
	if v, ok := i.Get(key); ok {
		return v
	}
	return def
}

func optIn(s *Stanza, key string) string {
	v := ""
	for _, o := range s.Options() {
		if o.Key == key {
			v = o.Value
		}
	}
	return v
}
