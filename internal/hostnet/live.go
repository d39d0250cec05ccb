package hostnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link is what the planner needs to know of one live interface.
type Link struct {
	Name  string
	Index int
	// Type is the kernel's link kind: bridge, bond, vlan, dummy, veth,
	// tun, device (a NIC) …
	Type   string
	Master string
	MTU    int
	Up     bool
	Addrs  []netip.Prefix
	// Bridge attributes (bridges only).
	STP       bool
	FD        int // forward delay in seconds
	VLANAware bool
	// Bond attributes (bonds only).
	BondMode, BondHash string
	Miimon             int
	// VLAN attributes (VLANs only).
	Parent string
	VID    int
	// VIDs are the VLANs of a bridge port (or of the bridge itself).
	VIDs []int
}

// Live is a snapshot of the interfaces, addresses and default routes of
// one network namespace.
type Live struct {
	Links map[string]*Link
	// Gateways are the default routes' gateways by family ("inet",
	// "inet6"), with their device.
	Gateways map[string]Route

	slaves map[string][]string // master → slaves, built on first use
}

// Route is a default route.
type Route struct {
	Gateway netip.Addr
	Dev     string
}

// Names is the set of live interface names, for Validate.
func (l *Live) Names() map[string]bool {
	m := make(map[string]bool, len(l.Links))
	for n := range l.Links {
		m[n] = true
	}
	return m
}

// Slaves returns the names whose master is name, sorted.
func (l *Live) Slaves(name string) []string {
	if l.slaves == nil {
		l.slaves = map[string][]string{}
		for n, k := range l.Links {
			if k.Master != "" {
				l.slaves[k.Master] = append(l.slaves[k.Master], n)
			}
		}
		for _, s := range l.slaves {
			slices.Sort(s)
		}
	}
	return l.slaves[name]
}

// ReadLive reads the namespace h is bound to. sys is where sysfs of that
// namespace is mounted ("/sys"; ip netns exec remounts it), for the bridge
// STP state and forward delay that netlink does not report here.
func ReadLive(h *netlink.Handle, sys string) (*Live, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	live := &Live{Links: map[string]*Link{}, Gateways: map[string]Route{}}
	byIndex := map[int]*Link{}
	for _, nl := range links {
		a := nl.Attrs()
		l := &Link{Name: a.Name, Index: a.Index, Type: nl.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
		switch v := nl.(type) {
		case *netlink.Bridge:
			l.VLANAware = v.VlanFiltering != nil && *v.VlanFiltering
			l.STP = readInt(sys, a.Name, "bridge/stp_state") != 0
			l.FD = readInt(sys, a.Name, "bridge/forward_delay") / 100
		case *netlink.Bond:
			l.BondMode = v.Mode.String()
			l.BondHash = v.XmitHashPolicy.String()
			l.Miimon = v.Miimon
		case *netlink.Vlan:
			l.VID = v.VlanId
		}
		live.Links[a.Name] = l
		byIndex[a.Index] = l
	}
	for _, nl := range links {
		a := nl.Attrs()
		l := live.Links[a.Name]
		if m := byIndex[a.MasterIndex]; m != nil && a.MasterIndex != 0 {
			l.Master = m.Name
		}
		if p := byIndex[a.ParentIndex]; p != nil && l.Type == "vlan" {
			l.Parent = p.Name
		}
	}
	// One dump of all addresses, not one per link.
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, ad := range addrs {
		l := byIndex[ad.LinkIndex]
		ip, ok := netip.AddrFromSlice(ad.IP)
		if l == nil || !ok {
			continue
		}
		ones, _ := ad.Mask.Size()
		l.Addrs = append(l.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	if vl, err := h.BridgeVlanList(); err == nil {
		for idx, infos := range vl {
			l := byIndex[int(idx)]
			if l == nil {
				continue
			}
			for _, in := range infos {
				l.VIDs = append(l.VIDs, int(in.Vid))
			}
		}
	}
	for fam, nf := range map[string]int{"inet": netlink.FAMILY_V4, "inet6": netlink.FAMILY_V6} {
		rs, err := h.RouteListFiltered(nf, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			if r.Gw == nil {
				continue
			}
			gw, _ := netip.AddrFromSlice(r.Gw)
			dev := ""
			if l := byIndex[r.LinkIndex]; l != nil {
				dev = l.Name
			}
			live.Gateways[fam] = Route{Gateway: gw.Unmap(), Dev: dev}
		}
	}
	return live, nil
}

func readInt(sys, name, attr string) int {
	b, err := os.ReadFile(filepath.Join(sys, "class/net", name, attr))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
