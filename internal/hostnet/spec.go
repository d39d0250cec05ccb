package hostnet

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ifupdown"
	"github.com/berthhq/berth/internal/store"
)

// SpecError lists what is wrong with a request, by field.
type SpecError map[string]string

func (e SpecError) Error() string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("invalid interface settings")
	for _, k := range keys {
		fmt.Fprintf(&b, "; %s: %s", k, e[k])
	}
	return b.String()
}

// FieldErrors implements the API's per-field errors.
func (e SpecError) FieldErrors() map[string]string { return e }

// EditFunc returns the edit that applies spec to interface name; create
// says whether the interface must be new (POST) or must exist (PUT).
func EditFunc(name string, spec wire.NetworkInterfaceSpec, create bool) func(f *ifupdown.File) error {
	return func(f *ifupdown.File) error {
		bad := SpecError{}
		c := ifupdown.FromFile(f)
		exists := c.Iface(name) != nil
		if name == "" {
			bad["name"] = "give the interface name (vmbr1, bond0, eno1.50 …)"
			return bad
		}
		if create && exists {
			return fmt.Errorf("interface %s is already defined: change it with PUT (berth net iface set): %w", name, store.ErrExists)
		}
		if !create && !exists {
			return fmt.Errorf("interface %s is not defined: %w", name, store.ErrNotFound)
		}
		if !create {
			for _, s := range f.Ifaces(name) {
				if s.File != f {
					return &conflict{fmt.Sprintf("%s is defined in %s: edit that file by hand", name, s.File.Path)}
				}
			}
		}
		var v4, v6 []string
		for _, a := range spec.Address {
			p, err := netip.ParsePrefix(a)
			if err != nil || !p.Addr().Is4() {
				bad["address"] = fmt.Sprintf("%q is not an IPv4 address in CIDR form (192.0.2.10/24)", a)
				continue
			}
			v4 = append(v4, a)
		}
		for _, a := range spec.Address6 {
			p, err := netip.ParsePrefix(a)
			if err != nil || !p.Addr().Is6() {
				bad["address6"] = fmt.Sprintf("%q is not an IPv6 address in CIDR form (2001:db8::10/64)", a)
				continue
			}
			v6 = append(v6, a)
		}
		if spec.Gateway != "" {
			if g, err := netip.ParseAddr(spec.Gateway); err != nil || !g.Is4() {
				bad["gateway"] = fmt.Sprintf("%q is not an IPv4 address", spec.Gateway)
			}
		}
		if spec.Gateway6 != "" {
			if g, err := netip.ParseAddr(spec.Gateway6); err != nil || !g.Is6() {
				bad["gateway6"] = fmt.Sprintf("%q is not an IPv6 address", spec.Gateway6)
			}
		}
		if spec.Method != "" && !slices.Contains([]string{"static", "manual", "dhcp"}, spec.Method) {
			bad["method"] = fmt.Sprintf("%q: use static, manual or dhcp", spec.Method)
		}
		if spec.MTU != 0 && (spec.MTU < 68 || spec.MTU > 65535) {
			bad["mtu"] = "use 68 to 65535"
		}
		if spec.BondMode != "" {
			if _, ok := ifupdown.BondMode(spec.BondMode); !ok {
				bad["bond_mode"] = fmt.Sprintf("%q: use balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb", spec.BondMode)
			}
		}
		for _, o := range spec.Options {
			if !ifupdown.ValidKey(o.Key) {
				bad["options"] = fmt.Sprintf("%q is not an option name: lower-case words with dashes, not a stanza keyword", o.Key)
			} else if !ifupdown.ValidValue(o.Value) {
				bad["options"] = fmt.Sprintf("%s: the value must be one non-empty line", o.Key)
			}
		}
		for _, d := range spec.Delete {
			if !ifupdown.ValidKey(d) {
				bad["delete"] = fmt.Sprintf("%q is not an option name", d)
			}
		}
		for k, list := range map[string][]string{"bond_slaves": spec.BondSlaves} {
			for _, n := range list {
				if strings.ContainsAny(n, " \t\n") || n == "" {
					bad[k] = fmt.Sprintf("%q is not an interface name", n)
				}
			}
		}
		if spec.BridgePorts != nil {
			for _, n := range *spec.BridgePorts {
				if strings.ContainsAny(n, " \t\n") || n == "" {
					bad["bridge_ports"] = fmt.Sprintf("%q is not an interface name", n)
				}
			}
		}
		if !ifupdown.ValidValue(name) || strings.ContainsAny(name, " \t#") {
			bad["name"] = fmt.Sprintf("%q is not an interface name", name)
		}
		if len(bad) > 0 {
			return bad
		}

		method := spec.Method
		var st *ifupdown.Stanza
		for _, s := range f.Ifaces(name) {
			if s.Family == "inet" || s.Family == "" {
				st = s
			}
		}
		if st == nil {
			if method == "" {
				method = "manual"
				if len(v4) > 0 {
					method = "static"
				}
			}
			auto := spec.Autostart == nil || *spec.Autostart
			if !create {
				auto = false // PUT of an inet6-only interface: auto stays as is
			}
			st = f.AddIface(name, "inet", method, auto && create, nil)
		} else {
			if method == "" && len(v4) > 0 && st.Method != "static" {
				method = "static"
			}
			if method != "" {
				f.SetMethod(st, "inet", method)
			}
		}
		if spec.Autostart != nil {
			f.SetAuto(name, *spec.Autostart)
		}
		set := func(s *ifupdown.Stanza, key string, values ...string) { f.SetOption(s, key, values...) }
		if len(v4) > 0 {
			set(st, "address", v4...)
		}
		if spec.Gateway != "" {
			set(st, "gateway", spec.Gateway)
		}
		if spec.MTU != 0 {
			set(st, "mtu", strconv.Itoa(spec.MTU))
		}
		if spec.BridgePorts != nil {
			ports := strings.Join(*spec.BridgePorts, " ")
			if ports == "" {
				ports = "none"
			}
			set(st, "bridge-ports", ports)
			if create {
				// Proxmox's defaults for a new bridge.
				if spec.BridgeSTP == nil {
					set(st, "bridge-stp", "off")
				}
				if spec.BridgeFD == nil {
					set(st, "bridge-fd", "0")
				}
			}
		}
		if spec.BridgeSTP != nil {
			set(st, "bridge-stp", onOff(*spec.BridgeSTP))
		}
		if spec.BridgeFD != nil {
			set(st, "bridge-fd", strconv.Itoa(*spec.BridgeFD))
		}
		if spec.BridgeVLANAware != nil {
			set(st, "bridge-vlan-aware", map[bool]string{true: "yes", false: "no"}[*spec.BridgeVLANAware])
		}
		if spec.BridgeVIDs != "" {
			set(st, "bridge-vids", spec.BridgeVIDs)
		}
		if len(spec.BondSlaves) > 0 {
			set(st, "bond-slaves", strings.Join(spec.BondSlaves, " "))
		}
		if spec.BondMiimon != nil {
			set(st, "bond-miimon", strconv.Itoa(*spec.BondMiimon))
		}
		if spec.BondMode != "" {
			set(st, "bond-mode", spec.BondMode)
		}
		if spec.BondXmitHashPolicy != "" {
			set(st, "bond-xmit-hash-policy", spec.BondXmitHashPolicy)
		}
		if spec.VLANRawDevice != "" {
			set(st, "vlan-raw-device", spec.VLANRawDevice)
		}
		if spec.VLANID != 0 {
			set(st, "vlan-id", strconv.Itoa(spec.VLANID))
		}
		for _, o := range spec.Options {
			set(st, o.Key, o.Value)
		}
		if len(v6) > 0 || spec.Gateway6 != "" {
			var s6 *ifupdown.Stanza
			for _, s := range f.Ifaces(name) {
				if s.Family == "inet6" {
					s6 = s
				}
			}
			if s6 == nil {
				s6 = f.AddIface(name, "inet6", "static", false, nil)
			} else if s6.Method != "static" {
				f.SetMethod(s6, "inet6", "static")
			}
			if len(v6) > 0 {
				set(s6, "address", v6...)
			}
			if spec.Gateway6 != "" {
				set(s6, "gateway", spec.Gateway6)
			}
		}
		for _, d := range spec.Delete {
			found := false
			for _, s := range f.Ifaces(name) {
				if f.DeleteOption(s, d) {
					found = true
				}
			}
			if !found {
				bad["delete"] = fmt.Sprintf("%s has no option %q", name, d)
			}
		}
		if len(bad) > 0 {
			return bad
		}
		return nil
	}
}

// RemoveFunc returns the edit that removes interface name.
func RemoveFunc(name string) func(f *ifupdown.File) error {
	return func(f *ifupdown.File) error {
		c := ifupdown.FromFile(f)
		if c.Iface(name) == nil {
			return fmt.Errorf("interface %s is not defined in %s: %w", name, f.Path, store.ErrNotFound)
		}
		f.RemoveIface(name)
		return nil
	}
}
