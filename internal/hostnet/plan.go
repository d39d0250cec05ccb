package hostnet

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/berthhq/berth/internal/ifupdown"
)

// Op is one kind of live change.
type Op string

// The operations a plan is made of.
const (
	OpHook      Op = "hook"       // run a pre-up/up/post-up/down/post-down command
	OpDelete    Op = "delete"     // delete a virtual link
	OpCreate    Op = "create"     // create a bridge, bond, VLAN or dummy
	OpBridge    Op = "bridge"     // set STP, forward delay, VLAN awareness
	OpBond      Op = "bond"       // set bond mode, miimon, hash policy
	OpMaster    Op = "master"     // make a link a port/slave of Master
	OpRelease   Op = "release"    // take a link out of its bridge or bond
	OpMTU       Op = "mtu"        // set the MTU
	OpAddrAdd   Op = "addr-add"   // add an address
	OpAddrDel   Op = "addr-del"   // remove an address
	OpVIDs      Op = "vids"       // add VLANs to a bridge port (or the bridge itself)
	OpLearning  Op = "learning"   // turn MAC learning off on a bridge port
	OpUp        Op = "up"         // set the link up
	OpRoute     Op = "route"      // set the default route of a family
	OpRouteDel  Op = "route-del"  // remove the default route of a family
	OpCheckLink Op = "check-link" // a physical NIC the file needs must exist
)

// Action is one step of a plan.
type Action struct {
	Op    Op     `json:"op"`
	Iface string `json:"iface"`
	// Parameters, as the op needs them.
	Type      string       `json:"type,omitempty"`
	Master    string       `json:"master,omitempty"`
	Parent    string       `json:"parent,omitempty"`
	VID       int          `json:"vid,omitempty"`
	MTU       int          `json:"mtu,omitempty"`
	Addr      netip.Prefix `json:"addr,omitzero"`
	Gateway   netip.Addr   `json:"gateway,omitzero"`
	Family    string       `json:"family,omitempty"`
	STP       bool         `json:"stp,omitempty"`
	FD        int          `json:"fd,omitempty"`
	VLANAware bool         `json:"vlan_aware,omitempty"`
	Self      bool         `json:"self,omitempty"`
	VIDs      [][2]int     `json:"vids,omitempty"`
	BondMode  string       `json:"bond_mode,omitempty"`
	BondHash  string       `json:"bond_hash,omitempty"`
	Miimon    int          `json:"miimon,omitempty"`
	Phase     string       `json:"phase,omitempty"`
	Cmd       string       `json:"cmd,omitempty"`
	Method    string       `json:"method,omitempty"`
}

func (a Action) String() string {
	switch a.Op {
	case OpHook:
		return fmt.Sprintf("%s: %s %s", a.Iface, a.Phase, a.Cmd)
	case OpCreate:
		s := fmt.Sprintf("%s: create %s", a.Iface, a.Type)
		switch a.Type {
		case "vlan":
			s += fmt.Sprintf(" on %s id %d", a.Parent, a.VID)
		case "bond":
			s += fmt.Sprintf(" mode %s miimon %d", a.BondMode, a.Miimon)
		case "bridge":
			s += fmt.Sprintf(" stp %s fd %d vlan-aware %s", onOff(a.STP), a.FD, onOff(a.VLANAware))
		}
		return s
	case OpBridge:
		return fmt.Sprintf("%s: set stp %s fd %d vlan-aware %s", a.Iface, onOff(a.STP), a.FD, onOff(a.VLANAware))
	case OpBond:
		return fmt.Sprintf("%s: set bond mode %s miimon %d xmit-hash-policy %s", a.Iface, a.BondMode, a.Miimon, a.BondHash)
	case OpMaster:
		return fmt.Sprintf("%s: join %s", a.Iface, a.Master)
	case OpRelease:
		return fmt.Sprintf("%s: leave %s", a.Iface, a.Master)
	case OpMTU:
		return fmt.Sprintf("%s: mtu %d", a.Iface, a.MTU)
	case OpAddrAdd:
		return fmt.Sprintf("%s: add address %s", a.Iface, a.Addr)
	case OpAddrDel:
		return fmt.Sprintf("%s: remove address %s", a.Iface, a.Addr)
	case OpVIDs:
		var rs []string
		for _, r := range a.VIDs {
			rs = append(rs, vidRange(r))
		}
		self := ""
		if a.Self {
			self = " (self)"
		}
		return fmt.Sprintf("%s: add VLANs %s%s", a.Iface, strings.Join(rs, " "), self)
	case OpLearning:
		return fmt.Sprintf("%s: MAC learning off", a.Iface)
	case OpRoute:
		return fmt.Sprintf("default route (%s) via %s", a.Family, a.Gateway)
	case OpRouteDel:
		return fmt.Sprintf("remove default route (%s) via %s", a.Family, a.Gateway)
	case OpCheckLink:
		return fmt.Sprintf("%s: check the NIC exists", a.Iface)
	}
	return fmt.Sprintf("%s: %s", a.Iface, a.Op)
}

func vidRange(r [2]int) string {
	if r[0] == r[1] {
		return strconv.Itoa(r[0])
	}
	return fmt.Sprintf("%d-%d", r[0], r[1])
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// PlanError is a change the planner refuses, before anything is changed.
type PlanError struct{ Msg string }

func (e *PlanError) Error() string { return e.Msg }

// FieldErrors makes a PlanError a 400 with the reason.
func (e *PlanError) FieldErrors() map[string]string { return map[string]string{"interfaces": e.Msg} }

// kernelType maps an ifupdown type to the kernel's link kind.
func kernelType(t string) string {
	switch t {
	case ifupdown.TypeBridge, ifupdown.TypeBond, ifupdown.TypeVLAN, ifupdown.TypeDummy:
		return t
	}
	return ""
}

// stanzaText is an interface's stanzas as written, to see if it changed.
func stanzaText(c *ifupdown.Config, name string) string {
	if c == nil {
		return ""
	}
	i := c.Iface(name)
	if i == nil {
		return ""
	}
	var b strings.Builder
	for _, s := range i.Stanzas {
		for _, l := range s.Lines {
			if !l.Comment() {
				b.WriteString(strings.TrimSpace(l.Text))
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

func hooks(i *ifupdown.Iface, phases ...string) []Action {
	var out []Action
	for _, ph := range phases {
		for _, s := range i.Stanzas {
			for _, o := range s.Options() {
				if o.Key == ph {
					out = append(out, Action{Op: OpHook, Iface: i.Name, Phase: ph, Cmd: o.Value, Family: s.Family, Method: s.Method})
				}
			}
		}
	}
	return out
}

// Plan computes the live changes that take the system from live to the
// state cur describes. prev is the configuration applied before (nil when
// unknown): interfaces it declared and cur does not are removed, and its
// down hooks run for interfaces that change. Links that neither file names
// (guest veth/tap ports) are never touched, and a bridge that still has
// such ports is not deleted.
func Plan(cur, prev *ifupdown.Config, live *Live) ([]Action, error) {
	// The plan updates its own copy of the live state as it deletes
	// links, so that later steps see freed slaves and ports.
	live = live.clone()
	up := cur.Order(cur.Up())
	acts := make([]Action, 0, 3*len(up)+8)
	inCur := map[string]bool{}
	for _, n := range up {
		inCur[n] = true
	}
	named := func(n string) bool {
		return cur.Iface(n) != nil || prev != nil && prev.Iface(n) != nil
	}

	// 1. Removals: virtual links of prev that cur does not bring up.
	if prev != nil {
		pup := prev.Order(prev.Up())
		for k := len(pup) - 1; k >= 0; k-- {
			n := pup[k]
			if inCur[n] {
				continue
			}
			pi := prev.Iface(n)
			l := live.Links[n]
			if pi == nil || l == nil {
				continue
			}
			acts = append(acts, hooks(pi, "pre-down", "down")...)
			if kernelType(pi.Type()) != "" && pi.Type() != ifupdown.TypePhysical {
				var guests []string
				for _, s := range live.Slaves(n) {
					if !named(s) {
						guests = append(guests, s)
					}
				}
				if len(guests) > 0 {
					return nil, &PlanError{fmt.Sprintf("%s is no longer in the file but guest ports %s still sit on it: move or stop those guests first, or keep %s", n, strings.Join(guests, ", "), n)}
				}
				acts = append(acts, Action{Op: OpDelete, Iface: n, Type: pi.Type()})
				live.deleted(n)
			} else {
				for _, a := range l.Addrs {
					if declared(pi, a) {
						acts = append(acts, Action{Op: OpAddrDel, Iface: n, Addr: a})
					}
				}
			}
			acts = append(acts, hooks(pi, "post-down")...)
		}
	}

	// 2. What cur wants, in dependency order.
	masterOf := map[string]string{}
	for _, n := range up {
		i := cur.Iface(n)
		if i == nil {
			continue
		}
		for _, p := range cur.Deps(i) {
			if t := i.Type(); t == ifupdown.TypeBridge || t == ifupdown.TypeBond {
				masterOf[p] = n
			}
		}
	}
	for _, n := range up {
		i := cur.Iface(n)
		l := live.Links[n]
		if i == nil {
			// An auto line without a stanza: bring it up if it exists.
			if l != nil && !l.Up {
				acts = append(acts, Action{Op: OpUp, Iface: n})
			}
			continue
		}
		changed := stanzaText(cur, n) != stanzaText(prev, n)
		var pi *ifupdown.Iface
		if prev != nil {
			pi = prev.Iface(n)
		}
		typ := i.Type()
		kt := kernelType(typ)
		if l != nil && kt != "" && l.Type != kt {
			if len(live.Slaves(n)) > 0 {
				return nil, &PlanError{fmt.Sprintf("%s exists as a %s but the file makes it a %s, and it has ports: remove it by hand first", n, l.Type, kt)}
			}
			acts = append(acts, Action{Op: OpDelete, Iface: n, Type: l.Type})
			live.deleted(n)
			l = nil
		}
		var mine []Action
		if changed && pi != nil && l != nil {
			mine = append(mine, hooks(pi, "pre-down", "down", "post-down")...)
		}
		created := false
		if l == nil {
			switch typ {
			case ifupdown.TypeLoopback, ifupdown.TypePhysical, ifupdown.TypeAlias:
				if typ == ifupdown.TypeAlias {
					continue
				}
				mine = append(mine, Action{Op: OpCheckLink, Iface: n})
			default:
				mine = append(mine, hooks(i, "pre-up")...)
				a := Action{Op: OpCreate, Iface: n, Type: kt}
				switch typ {
				case ifupdown.TypeBridge:
					a.STP, a.FD, a.VLANAware = bridgeWant(i)
				case ifupdown.TypeBond:
					a.BondMode, a.Miimon, a.BondHash = bondWant(i)
				case ifupdown.TypeVLAN:
					a.Parent, a.VID, _ = i.VLAN()
				}
				mine = append(mine, a)
				created = true
			}
		} else if changed {
			mine = append(mine, hooks(i, "pre-up")...)
		}
		ln := l
		if ln == nil {
			ln = &Link{Name: n}
		}
		switch typ {
		case ifupdown.TypeBridge:
			stp, fd, aware := bridgeWant(i)
			if !created && (ln.STP != stp || ln.FD != fd || ln.VLANAware != aware) {
				mine = append(mine, Action{Op: OpBridge, Iface: n, STP: stp, FD: fd, VLANAware: aware})
			}
			ports := i.Ports()
			for _, p := range live.Slaves(n) {
				if !slices.Contains(ports, p) && named(p) {
					mine = append(mine, Action{Op: OpRelease, Iface: p, Master: n})
				}
			}
			vids, _ := ifupdown.ParseVIDs(valueOr(i, "bridge-vids", ""))
			nolearn, _ := ifupdown.ParseBool(valueOr(i, "bridge-disable-mac-learning", "0"))
			prevNolearn := false
			if pi != nil {
				prevNolearn, _ = ifupdown.ParseBool(valueOr(pi, "bridge-disable-mac-learning", "0"))
			}
			for _, p := range ports {
				pl := live.Links[p]
				joined := pl == nil || pl.Master != n
				if joined {
					mine = append(mine, Action{Op: OpMaster, Iface: p, Master: n})
				}
				if aware && len(vids) > 0 && (joined || missingVIDs(pl.VIDs, vids)) {
					mine = append(mine, Action{Op: OpVIDs, Iface: p, VIDs: vids})
				}
				if nolearn && (joined || !prevNolearn) {
					mine = append(mine, Action{Op: OpLearning, Iface: p})
				}
			}
		case ifupdown.TypeBond:
			mode, miimon, hash := bondWant(i)
			if !created && (ln.BondMode != mode || ln.Miimon != miimon || ln.BondHash != hash) {
				mine = append(mine, Action{Op: OpBond, Iface: n, BondMode: mode, Miimon: miimon, BondHash: hash})
			}
			slaves := i.Slaves()
			for _, s := range live.Slaves(n) {
				if !slices.Contains(slaves, s) {
					mine = append(mine, Action{Op: OpRelease, Iface: s, Master: n})
				}
			}
			for _, s := range slaves {
				if sl := live.Links[s]; sl == nil || sl.Master != n {
					mine = append(mine, Action{Op: OpMaster, Iface: s, Master: n})
				}
			}
		case ifupdown.TypeVLAN:
			raw, vid, _ := i.VLAN()
			if !created && (ln.Parent != raw || ln.VID != vid) {
				if len(live.Slaves(n)) > 0 || ln.Master != "" {
					return nil, &PlanError{fmt.Sprintf("VLAN %s is on %s id %d but the file wants %s id %d, and it is in use: remove it by hand first", n, ln.Parent, ln.VID, raw, vid)}
				}
				mine = append(mine, Action{Op: OpDelete, Iface: n, Type: "vlan"}, Action{Op: OpCreate, Iface: n, Type: "vlan", Parent: raw, VID: vid})
				created = true
			}
			// A VLAN device on a VLAN-aware bridge needs the VLAN on the
			// bridge itself.
			if ri := cur.Iface(raw); ri != nil && ri.Type() == ifupdown.TypeBridge {
				if aware, _ := ifupdown.ParseBool(valueOr(ri, "bridge-vlan-aware", "no")); aware {
					if rl := live.Links[raw]; rl == nil || !slices.Contains(rl.VIDs, vid) {
						mine = append(mine, Action{Op: OpVIDs, Iface: raw, Self: true, VIDs: [][2]int{{vid, vid}}})
					}
				}
			}
		}
		// A port or slave no longer named as one leaves its master.
		if ln.Master != "" && masterOf[n] == "" && named(ln.Master) && !created {
			mine = append(mine, Action{Op: OpRelease, Iface: n, Master: ln.Master})
		}
		if v, ok := i.Get("mtu"); ok {
			if mtu, _ := strconv.Atoi(v); mtu != ln.MTU {
				mine = append(mine, Action{Op: OpMTU, Iface: n, MTU: mtu})
			}
		}
		mine = append(mine, addrActions(i, pi, ln)...)
		if !ln.Up || created {
			mine = append(mine, Action{Op: OpUp, Iface: n})
		}
		if changed || created {
			mine = append(mine, hooks(i, "up", "post-up")...)
		}
		acts = append(acts, mine...)
	}

	// 3. Default gateways.
	for _, fam := range []string{"inet", "inet6"} {
		var want netip.Addr
		dev := ""
		for _, n := range up {
			i := cur.Iface(n)
			if i == nil {
				continue
			}
			for _, s := range i.Stanzas {
				if s.Method != "static" {
					continue
				}
				for _, o := range s.Options() {
					if o.Key != "gateway" {
						continue
					}
					if gw, err := netip.ParseAddr(o.Value); err == nil && (gw.Is4() == (fam == "inet")) {
						want, dev = gw, n
					}
				}
			}
		}
		have := live.Gateways[fam]
		switch {
		case want.IsValid() && (have.Gateway != want || have.Dev != dev && have.Dev != ""):
			acts = append(acts, Action{Op: OpRoute, Iface: dev, Family: fam, Gateway: want})
		case !want.IsValid() && have.Gateway.IsValid() && prev != nil && prevGateway(prev, fam) == have.Gateway:
			acts = append(acts, Action{Op: OpRouteDel, Iface: have.Dev, Family: fam, Gateway: have.Gateway})
		}
	}
	return acts, nil
}

func prevGateway(c *ifupdown.Config, fam string) netip.Addr {
	for _, i := range c.Ifaces {
		if v, ok := i.Get("gateway"); ok {
			if gw, err := netip.ParseAddr(v); err == nil && gw.Is4() == (fam == "inet") {
				return gw
			}
		}
	}
	return netip.Addr{}
}

// declared reports whether the interface's stanzas name address a.
func declared(i *ifupdown.Iface, a netip.Prefix) bool {
	addrs, _ := i.Addresses()
	return slices.Contains(addrs, a)
}

// addrActions adds the static addresses that are missing and removes the
// ones that are not wanted: all others on a static family, and on manual or
// dhcp families only those the previous file had declared (a DHCP client's
// lease stays). IPv6 link-local addresses are never touched.
func addrActions(i, pi *ifupdown.Iface, l *Link) []Action {
	var out []Action
	want, _ := i.Addresses()
	for _, a := range want {
		if !slices.Contains(l.Addrs, a) {
			out = append(out, Action{Op: OpAddrAdd, Iface: i.Name, Addr: a})
		}
	}
	for _, a := range l.Addrs {
		if slices.Contains(want, a) || a.Addr().IsLinkLocalUnicast() || a.Addr().IsLoopback() {
			continue
		}
		fam := "inet"
		if a.Addr().Is6() {
			fam = "inet6"
		}
		static := i.Method(fam) == "static"
		if static || pi != nil && declared(pi, a) {
			out = append(out, Action{Op: OpAddrDel, Iface: i.Name, Addr: a})
		}
	}
	return out
}

func missingVIDs(have []int, want [][2]int) bool {
	for _, r := range want {
		for v := r[0]; v <= r[1]; v++ {
			if !slices.Contains(have, v) {
				return true
			}
		}
	}
	return false
}

func valueOr(i *ifupdown.Iface, key, def string) string {
	if v, ok := i.Get(key); ok {
		return v
	}
	return def
}

// bridgeWant returns the bridge's STP, forward delay and VLAN awareness,
// with the kernel's defaults where the file is silent (STP off, forward
// delay 15 s, not VLAN-aware).
func bridgeWant(i *ifupdown.Iface) (stp bool, fd int, aware bool) {
	stp, _ = ifupdown.ParseBool(valueOr(i, "bridge-stp", "off"))
	fd = 15
	if v, ok := i.Get("bridge-fd"); ok {
		fd, _ = strconv.Atoi(v)
	}
	aware, _ = ifupdown.ParseBool(valueOr(i, "bridge-vlan-aware", "no"))
	return stp, fd, aware
}

// bondWant returns the bond's mode, miimon and hash policy with the
// bonding driver's defaults (balance-rr, 0, layer2).
func bondWant(i *ifupdown.Iface) (mode string, miimon int, hash string) {
	mode, _ = ifupdown.BondMode(valueOr(i, "bond-mode", "balance-rr"))
	miimon, _ = strconv.Atoi(valueOr(i, "bond-miimon", "0"))
	hash = valueOr(i, "bond-xmit-hash-policy", "layer2")
	return mode, miimon, hash
}

// clone copies the snapshot's links so a plan can change its view.
func (l *Live) clone() *Live {
	c := &Live{Links: make(map[string]*Link, len(l.Links)), Gateways: l.Gateways}
	for n, k := range l.Links {
		k2 := *k
		c.Links[n] = &k2
	}
	return c
}

// deleted records that a link is gone: its VLANs go with it, its ports
// and slaves are released, and a bond's slaves are left down.
func (l *Live) deleted(name string) {
	l.slaves = nil
	gone := l.Links[name]
	delete(l.Links, name)
	for n, k := range l.Links {
		if k.Master == name {
			k.Master = ""
			if gone != nil && gone.Type == "bond" {
				k.Up = false
			}
		}
		if k.Type == "vlan" && k.Parent == name {
			delete(l.Links, n)
		}
	}
}
