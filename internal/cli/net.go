package cli

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/daemon"
	"github.com/berthhq/berth/internal/hostnet"
)

// HostnetHelperCmd is the hidden command the daemon re-executes to apply
// network changes inside the managed namespace.
const HostnetHelperCmd = "hostnet-helper"

// netServeFlags adds serve's host-network flags.
func netServeFlags(f *pflag.FlagSet, o *daemon.Options) {
	f.StringVar(&o.HostNet.Interfaces, "interfaces", hostnet.DefaultInterfaces, "the interfaces(5) file berth manages (staged changes go to FILE.new)")
	f.StringVar(&o.HostNet.NetNS, "net-namespace", "", "apply network changes in this named network namespace (ip netns) instead of the host's; for tests")
	_ = f.MarkHidden("net-namespace")
	o.HostNet.Helper = []string{selfPath(), HostnetHelperCmd}
}

// selfPath is how to run this binary again: the name it was started by
// (found on PATH), else the executable.
func selfPath() string {
	if p, err := exec.LookPath(os.Args[0]); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	if p, err := os.Executable(); err == nil {
		return p
	}
	return os.Args[0]
}

func (e *env) hostnetHelperCmd() *cobra.Command {
	return &cobra.Command{
		Use:    HostnetHelperCmd,
		Short:  "Apply a network configuration in this process's network namespace (run by the daemon)",
		Hidden: true,
		Args:   exactArgs(0, "no arguments (the request comes on stdin)"),
		RunE: func(c *cobra.Command, _ []string) error {
			return hostnet.RunHelper(c.Context(), os.Stdin, e.stdout)
		},
	}
}

func (e *env) netCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "net",
		Short: "Host network configuration: staged changes to /etc/network/interfaces, diff, live apply with rollback",
		Long: `Changes made with 'berth net iface …' are staged in /etc/network/interfaces.new;
'berth net diff' shows them, 'berth net apply' moves them into place and applies
them live (no reboot, guests stay on their bridges), 'berth net revert' drops
them. Hand edits of /etc/network/interfaces are applied with 'berth net apply'
too. With --rollback-after S (the default over HTTPS: 60 s) the change is rolled
back unless 'berth net confirm' comes within S seconds.`,
	}
	c.AddCommand(e.netShow(), e.netDiff(), e.netApply(), e.netSimple("confirm", "Keep the last applied change: cancel its pending rollback", "POST", "/api/v1/node/network/confirm", "confirmed"),
		e.netSimple("revert", "Drop the staged changes (interfaces.new)", "DELETE", "/api/v1/node/network", "staged changes dropped"), e.netRollback(), e.netIface())
	return c
}

func (e *env) netShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "List the interfaces (of the staged file when changes are staged) with digests and any pending rollback",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var nc wire.NetworkConfig
			if err := e.do(c.Context(), "GET", "/api/v1/node/network", nil, &nc); err != nil {
				return err
			}
			return e.show(nc, func(w io.Writer) {
				row(w, "NAME", "TYPE", "AUTO", "ACTIVE", "METHOD", "ADDRESSES", "GATEWAY", "PORTS/SLAVES", "MTU")
				for _, i := range nc.Interfaces {
					method := dash(i.Method)
					if i.Method6 != "" {
						method += "/" + i.Method6
					}
					gw := i.Gateway
					if i.Gateway6 != "" {
						gw = strings.Trim(gw+","+i.Gateway6, ",")
					}
					members := append(append([]string{}, i.Ports...), i.Slaves...)
					if i.VLANRawDevice != "" {
						members = []string{fmt.Sprintf("%s vid %d", i.VLANRawDevice, i.VLANID)}
					}
					mtu := "-"
					if i.MTU != 0 {
						mtu = fmt.Sprint(i.MTU)
					}
					row(w, i.Name, i.Type, yesNo(i.Auto), yesNo(i.Active), method, dash(strings.Join(i.Addresses, ",")), dash(gw), dash(strings.Join(members, ",")), mtu)
				}
				fmt.Fprintln(w)
				kv(w, "file", nc.Path, "digest", nc.Digest)
				if nc.Changes {
					kv(w, "staged", "yes, digest "+nc.StagedDigest+" (berth net diff; berth net apply)")
				}
				if nc.Stale {
					kv(w, "warning", "the file was edited by hand after the changes were staged")
				}
				if r := nc.Rollback; r != nil {
					kv(w, "rollback", fmt.Sprintf("%s, at %s unless confirmed (berth net confirm)", r.State, ts(r.Deadline)))
				}
			})
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (e *env) netDiff() *cobra.Command {
	return &cobra.Command{
		Use:   "diff",
		Short: "Show the staged changes as a unified diff",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var d wire.NetworkDiff
			if err := e.do(c.Context(), "GET", "/api/v1/node/network/diff", nil, &d); err != nil {
				return err
			}
			if e.output == "json" {
				return e.show(d, nil)
			}
			if d.Diff == "" {
				fmt.Fprintln(e.stdout, "no staged changes")
				return nil
			}
			_, err := io.WriteString(e.stdout, d.Diff)
			return err
		},
	}
}

func (e *env) netApply() *cobra.Command {
	var bg bool
	var rollback time.Duration
	var req wire.NetworkApplyRequest
	c := &cobra.Command{
		Use:   "apply",
		Short: "Move staged changes into place and apply them live (a task)",
		Long: `Validate the staged file (or, with nothing staged, the hand-edited active file),
move it into place and change the live network to match: bridges, bonds, VLANs,
addresses, routes and MTUs; guest ports stay on their bridges. A failure puts
the previous file and state back. With --rollback-after the change is rolled
back unless 'berth net confirm' comes in time (default over HTTPS: 60s; 0 turns
it off).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if c.Flags().Changed("rollback-after") {
				if rollback < 0 {
					return usageError{fmt.Errorf("--rollback-after must not be negative")}
				}
				s := int(rollback / time.Second)
				req.RollbackAfter = &s
			}
			return e.runTask(c.Context(), "POST", "/api/v1/node/network/apply", req, bg)
		},
	}
	c.Flags().DurationVar(&rollback, "rollback-after", 0, "roll the change back unless confirmed within this time (e.g. 60s; 0 = off; default 60s over HTTPS, off locally)")
	c.Flags().StringVar(&req.Digest, "digest", "", "digest of what is applied; needed to apply staged changes after a hand edit of the active file")
	c.Flags().BoolVar(&req.DryRun, "dry-run", false, "only list the live changes the apply would make")
	asyncFlags(c, &bg)
	return c
}

func (e *env) netRollback() *cobra.Command {
	var bg bool
	c := &cobra.Command{
		Use:   "rollback",
		Short: "Roll back the last applied, unconfirmed change now (a task)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/node/network/rollback", nil, bg)
		},
	}
	asyncFlags(c, &bg)
	return c
}

func (e *env) netSimple(use, short, method, path, done string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := e.do(c.Context(), method, path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, done)
			return nil
		},
	}
}

// ifaceFlags are the flags of iface add and set.
type ifaceFlags struct {
	spec                 wire.NetworkInterfaceSpec
	ports                string
	stp, vlanAware, auto bool
	fd, miimon           int
	options              []string
}

func (f *ifaceFlags) register(c *cobra.Command, set bool) {
	fl := c.Flags()
	fl.StringVar(&f.spec.Method, "method", "", "inet method: static, manual or dhcp (default static with --address, else manual)")
	fl.StringSliceVar(&f.spec.Address, "address", nil, "IPv4 address in CIDR form (repeatable)")
	fl.StringVar(&f.spec.Gateway, "gateway", "", "IPv4 default gateway")
	fl.StringSliceVar(&f.spec.Address6, "address6", nil, "IPv6 address in CIDR form (repeatable)")
	fl.StringVar(&f.spec.Gateway6, "gateway6", "", "IPv6 default gateway")
	fl.IntVar(&f.spec.MTU, "mtu", 0, "MTU")
	fl.StringVar(&f.ports, "bridge-ports", "", "bridge ports, comma-separated, or 'none' (makes a bridge)")
	fl.BoolVar(&f.stp, "bridge-stp", false, "spanning tree on the bridge")
	fl.IntVar(&f.fd, "bridge-fd", 0, "bridge forward delay in seconds")
	fl.BoolVar(&f.vlanAware, "bridge-vlan-aware", false, "make the bridge VLAN-aware")
	fl.StringVar(&f.spec.BridgeVIDs, "bridge-vids", "", "VLANs of a VLAN-aware bridge's ports, e.g. 2-4094")
	fl.StringSliceVar(&f.spec.BondSlaves, "bond-slaves", nil, "bond slaves, comma-separated (makes a bond)")
	fl.StringVar(&f.spec.BondMode, "bond-mode", "", "balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb")
	fl.IntVar(&f.miimon, "bond-miimon", 0, "bond link check interval in ms")
	fl.StringVar(&f.spec.BondXmitHashPolicy, "bond-xmit-hash-policy", "", "layer2, layer2+3, layer3+4, encap2+3, encap3+4 or vlan+srcmac")
	fl.StringVar(&f.spec.VLANRawDevice, "vlan-raw-device", "", "VLAN parent device (for VLAN names without a dot)")
	fl.IntVar(&f.spec.VLANID, "vlan-id", 0, "VLAN ID (for VLAN names without a dot)")
	fl.StringArrayVar(&f.options, "option", nil, "any ifupdown2 option as KEY=VALUE, e.g. post-up='iptables …' (repeatable)")
	fl.BoolVar(&f.auto, "autostart", true, "bring the interface up at boot (an auto line)")
	fl.StringVar(&f.spec.Digest, "digest", "", "digest the change is based on (409 if the file changed since)")
	if set {
		fl.StringSliceVar(&f.spec.Delete, "delete", nil, "option keys to remove, comma-separated")
	}
}

func (f *ifaceFlags) build(c *cobra.Command) (wire.NetworkInterfaceSpec, error) {
	s := f.spec
	ch := c.Flags().Changed
	if ch("bridge-ports") {
		ports := []string{}
		if f.ports != "none" && f.ports != "" {
			ports = strings.Split(f.ports, ",")
		}
		s.BridgePorts = &ports
	}
	if ch("bridge-stp") {
		s.BridgeSTP = &f.stp
	}
	if ch("bridge-fd") {
		s.BridgeFD = &f.fd
	}
	if ch("bridge-vlan-aware") {
		s.BridgeVLANAware = &f.vlanAware
	}
	if ch("bond-miimon") {
		s.BondMiimon = &f.miimon
	}
	if ch("autostart") || c.Name() == "add" {
		s.Autostart = &f.auto
	}
	for _, o := range f.options {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return s, usageError{fmt.Errorf("--option %q: write KEY=VALUE", o)}
		}
		s.Options = append(s.Options, wire.NetworkOption{Key: k, Value: v})
	}
	return s, nil
}

func (e *env) netIface() *cobra.Command {
	c := &cobra.Command{Use: "iface", Short: "Stage interface changes: add, set, remove"}
	showStaged := func(nc wire.NetworkConfig) error {
		return e.show(nc, func(w io.Writer) {
			kv(w, "staged", nc.StagedDigest, "next", "berth net diff; berth net apply")
		})
	}
	add := e.netIfaceEdit("add NAME", "Stage a new interface (a bridge with --bridge-ports, a bond with --bond-slaves, a VLAN as NAME.VID)", "POST", false, showStaged)
	set := e.netIfaceEdit("set NAME", "Stage changes to an interface; options not given stay as they are", "PUT", true, showStaged)
	var digest string
	rm := &cobra.Command{
		Use:   "remove NAME",
		Short: "Stage the removal of an interface",
		Args:  exactArgs(1, "the interface name"),
		RunE: func(c *cobra.Command, args []string) error {
			p := "/api/v1/node/network/interfaces/" + url.PathEscape(args[0])
			if digest != "" {
				p += "?digest=" + url.QueryEscape(digest)
			}
			var nc wire.NetworkConfig
			if err := e.do(c.Context(), "DELETE", p, nil, &nc); err != nil {
				return err
			}
			return showStaged(nc)
		},
	}
	rm.Flags().StringVar(&digest, "digest", "", "digest the change is based on (409 if the file changed since)")
	c.AddCommand(add, set, rm)
	return c
}

// netIfaceEdit is iface add (POST) or iface set (PUT, with --delete).
func (e *env) netIfaceEdit(use, short, method string, set bool, show func(wire.NetworkConfig) error) *cobra.Command {
	var f ifaceFlags
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, "the interface name"),
		RunE: func(c *cobra.Command, args []string) error {
			spec, err := f.build(c)
			if err != nil {
				return err
			}
			path := "/api/v1/node/network/interfaces"
			if set {
				path += "/" + url.PathEscape(args[0])
			} else {
				spec.Name = args[0]
			}
			var nc wire.NetworkConfig
			if err := e.do(c.Context(), method, path, spec, &nc); err != nil {
				return err
			}
			return show(nc)
		},
	}
	f.register(c, set)
	return c
}
