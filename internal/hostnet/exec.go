package hostnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Logf receives progress lines.
type Logf func(format string, args ...any)

// Executor carries out actions in the network namespace its handle is
// bound to.
type Executor struct {
	H *netlink.Handle
	// Sys is where that namespace's sysfs is mounted ("/sys").
	Sys string
	Log Logf
}

func (x *Executor) link(name string) (netlink.Link, error) {
	l, err := x.H.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

func (x *Executor) sysWrite(name, attr, value string) error {
	p := filepath.Join(x.Sys, "class/net", name, attr)
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set %s %s=%s: %w", name, attr, value, err)
	}
	return nil
}

// Run executes the actions in order and stops at the first failure (hooks
// excepted: a failing hook is logged, as ifupdown2 does, and the rest goes
// on).
func (x *Executor) Run(ctx context.Context, acts []Action) error {
	for _, a := range acts {
		if err := ctx.Err(); err != nil {
			return err
		}
		x.Log("%s", a)
		if err := x.do(ctx, a); err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
	}
	return nil
}

func (x *Executor) do(ctx context.Context, a Action) error {
	switch a.Op {
	case OpHook:
		return x.hook(ctx, a)
	case OpCheckLink:
		if _, err := x.H.LinkByName(a.Iface); err != nil {
			return fmt.Errorf("%s does not exist on this host: check the NIC's name with 'ip link' and fix the file", a.Iface)
		}
		return nil
	case OpCreate:
		return x.create(a)
	case OpDelete:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		return x.H.LinkDel(l)
	case OpBridge:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		// Kernels without VLAN filtering report no value: that is "off".
		// (sysfs, not netlink: the library's change resends every
		// attribute it read, which the kernel can refuse with EBUSY.)
		if b, ok := l.(*netlink.Bridge); ok && (b.VlanFiltering != nil && *b.VlanFiltering) != a.VLANAware {
			v := "0"
			if a.VLANAware {
				v = "1"
			}
			if err := x.sysWrite(a.Iface, "bridge/vlan_filtering", v); err != nil {
				return err
			}
		}
		return x.bridgeSTP(a)
	case OpBond:
		return x.setBond(a)
	case OpMaster:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		m, err := x.link(a.Master)
		if err != nil {
			return err
		}
		if m.Type() == "bond" {
			// The bonding driver takes only slaves that are down.
			if err := x.H.LinkSetDown(l); err != nil {
				return err
			}
		}
		if err := x.H.LinkSetMasterByIndex(l, m.Attrs().Index); err != nil {
			return err
		}
		return x.H.LinkSetUp(l)
	case OpRelease:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		return x.H.LinkSetNoMaster(l)
	case OpMTU:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		return x.H.LinkSetMTU(l, a.MTU)
	case OpAddrAdd, OpAddrDel:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		ad := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.Addr.Addr().AsSlice()), Mask: net.CIDRMask(a.Addr.Bits(), a.Addr.Addr().BitLen())}}
		if a.Op == OpAddrDel {
			return x.H.AddrDel(l, ad)
		}
		return x.H.AddrAdd(l, ad)
	case OpVIDs:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		for _, r := range a.VIDs {
			var err error
			if r[0] == r[1] {
				// The kernel refuses a range of one.
				err = x.H.BridgeVlanAdd(l, uint16(r[0]), false, false, a.Self, !a.Self)
			} else {
				err = x.H.BridgeVlanAddRange(l, uint16(r[0]), uint16(r[1]), false, false, a.Self, !a.Self)
			}
			if err != nil {
				return err
			}
		}
		return nil
	case OpLearning:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		return x.H.LinkSetLearning(l, false)
	case OpUp:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		return x.H.LinkSetUp(l)
	case OpRoute:
		l, err := x.link(a.Iface)
		if err != nil {
			return err
		}
		return x.H.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(a.Gateway.AsSlice()), Family: family(a.Family)})
	case OpRouteDel:
		return x.H.RouteDel(&netlink.Route{Gw: net.IP(a.Gateway.AsSlice()), Family: family(a.Family)})
	}
	return fmt.Errorf("unknown action %q", a.Op)
}

func family(f string) int {
	if f == "inet6" {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

func (x *Executor) create(a Action) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = a.Iface
	var l netlink.Link
	switch a.Type {
	case "bridge":
		br := &netlink.Bridge{LinkAttrs: attrs}
		if a.VLANAware {
			// Only when wanted: kernels without VLAN filtering refuse
			// even "off".
			aware := true
			br.VlanFiltering = &aware
		}
		l = br
	case "bond":
		b := netlink.NewLinkBond(attrs)
		b.Mode = netlink.StringToBondMode(a.BondMode)
		b.Miimon = a.Miimon
		if a.BondHash != "" {
			b.XmitHashPolicy = netlink.StringToBondXmitHashPolicy(a.BondHash)
		}
		l = b
	case "vlan":
		p, err := x.link(a.Parent)
		if err != nil {
			return err
		}
		attrs.ParentIndex = p.Attrs().Index
		l = &netlink.Vlan{LinkAttrs: attrs, VlanId: a.VID}
	case "dummy":
		l = &netlink.Dummy{LinkAttrs: attrs}
	default:
		return fmt.Errorf("cannot create a link of type %q", a.Type)
	}
	if err := x.H.LinkAdd(l); err != nil {
		// Loading the bonding module with its default max_bonds=1 makes
		// a bond0 of its own: take it over and set it as wanted.
		if ex, lerr := x.H.LinkByName(a.Iface); errors.Is(err, unix.EEXIST) && lerr == nil && ex.Type() == a.Type && a.Type == "bond" {
			x.Log("  %s already exists (made by the bonding driver): configuring it", a.Iface)
			return x.setBond(Action{Op: OpBond, Iface: a.Iface, BondMode: a.BondMode, Miimon: a.Miimon, BondHash: a.BondHash})
		}
		return err
	}
	if a.Type == "bridge" {
		return x.bridgeSTP(a)
	}
	return nil
}

func (x *Executor) bridgeSTP(a Action) error {
	stp := "0"
	if a.STP {
		stp = "1"
	}
	// Forward delay first: with STP on, the kernel refuses a delay under 2 s.
	if !a.STP {
		if err := x.sysWrite(a.Iface, "bridge/stp_state", stp); err != nil {
			return err
		}
	}
	if err := x.sysWrite(a.Iface, "bridge/forward_delay", strconv.Itoa(a.FD*100)); err != nil {
		return err
	}
	if a.STP {
		return x.sysWrite(a.Iface, "bridge/stp_state", stp)
	}
	return nil
}

// setBond changes a bond's parameters through sysfs. A new mode needs the
// bond down and without slaves, so they are released and re-added.
func (x *Executor) setBond(a Action) error {
	l, err := x.link(a.Iface)
	if err != nil {
		return err
	}
	cur, _ := l.(*netlink.Bond)
	if cur != nil && cur.Mode.String() != a.BondMode {
		links, err := x.H.LinkList()
		if err != nil {
			return err
		}
		var slaves []netlink.Link
		for _, s := range links {
			if s.Attrs().MasterIndex == l.Attrs().Index {
				slaves = append(slaves, s)
				if err := x.H.LinkSetNoMaster(s); err != nil {
					return err
				}
			}
		}
		if err := x.H.LinkSetDown(l); err != nil {
			return err
		}
		if err := x.sysWrite(a.Iface, "bonding/mode", a.BondMode); err != nil {
			return err
		}
		for _, s := range slaves {
			_ = x.H.LinkSetDown(s)
			if err := x.H.LinkSetMasterByIndex(s, l.Attrs().Index); err != nil {
				return err
			}
			_ = x.H.LinkSetUp(s)
		}
		if err := x.H.LinkSetUp(l); err != nil {
			return err
		}
	}
	if err := x.sysWrite(a.Iface, "bonding/miimon", strconv.Itoa(a.Miimon)); err != nil {
		return err
	}
	if a.BondHash != "" {
		return x.sysWrite(a.Iface, "bonding/xmit_hash_policy", a.BondHash)
	}
	return nil
}

// hook runs a command with /bin/sh and ifupdown's environment. A failure
// is logged, not returned.
func (x *Executor) hook(ctx context.Context, a Action) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", a.Cmd)
	mode := "start"
	if strings.Contains(a.Phase, "down") {
		mode = "stop"
	}
	fam := a.Family
	if fam == "" {
		fam = "inet"
	}
	cmd.Env = append(os.Environ(), "IFACE="+a.Iface, "LOGICAL="+a.Iface, "ADDRFAM="+fam, "METHOD="+a.Method, "MODE="+mode, "PHASE="+a.Phase)
	out, err := cmd.CombinedOutput()
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		x.Log("  %s", sc.Text())
	}
	if err != nil {
		x.Log("warning: %s hook of %s failed: %v", a.Phase, a.Iface, err)
	}
	return nil
}
