package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
)

func (e *env) nodeCmd() *cobra.Command {
	c := &cobra.Command{Use: "node", Short: "Node status, configuration, Wake-on-LAN, bulk guest start/stop, certificates"}
	c.AddCommand(e.nodeStatus(), e.nodeConfig(), e.nodeWOL(), e.nodeBulk("startall"), e.nodeBulk("stopall"), e.nodeCerts())
	return c
}

func gib(b uint64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }

func pct(used, total uint64) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(used)/float64(total))
}

func (e *env) nodeStatus() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the node's kernel, uptime, load, CPU, memory, swap, root fs, boot mode and KSM",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var s wire.NodeStatus
			if err := e.do(c.Context(), "GET", "/api/v1/node/status", nil, &s); err != nil {
				return err
			}
			return e.show(s, func(w io.Writer) {
				boot := s.BootInfo.Mode
				if s.BootInfo.SecureBoot {
					boot += " (secure boot)"
				}
				kv(w, "hostname", s.Hostname,
					"kernel", s.Kernel.Sysname+" "+s.Kernel.Release+" "+s.Kernel.Version,
					"uptime", fmt.Sprintf("%dd %02dh %02dm", s.Uptime/86400, s.Uptime%86400/3600, s.Uptime%3600/60),
					"load average", fmt.Sprintf("%.2f %.2f %.2f", s.LoadAvg[0], s.LoadAvg[1], s.LoadAvg[2]),
					"cpu", fmt.Sprintf("%d x %s (%d socket(s))", s.CPUInfo.CPUs, s.CPUInfo.Model, s.CPUInfo.Sockets),
					"memory", fmt.Sprintf("%s of %s used (%s)", gib(s.Memory.Used), gib(s.Memory.Total), pct(s.Memory.Used, s.Memory.Total)),
					"swap", fmt.Sprintf("%s of %s used", gib(s.Swap.Used), gib(s.Swap.Total)),
					"root fs", fmt.Sprintf("%s of %s used (%s)", gib(s.RootFS.Used), gib(s.RootFS.Total), pct(s.RootFS.Used, s.RootFS.Total)),
					"boot mode", boot,
					"ksm", fmt.Sprintf("run=%d shared=%d sharing=%d saved=%s mode=%s", s.KSM.Run, s.KSM.PagesShared, s.KSM.PagesSharing, gib(s.KSM.Saved), dash(s.KSM.Mode)),
					"esp", espSummary(s.ESP),
					"berth", s.BerthVersion)
			})
		},
	}
}

func (e *env) nodeConfig() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Get or set the node configuration"}
	get := &cobra.Command{
		Use:   "get",
		Short: "Show the node configuration and its digest",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var cfg wire.NodeConfig
			if err := e.do(c.Context(), "GET", "/api/v1/node/config", nil, &cfg); err != nil {
				return err
			}
			return e.show(cfg, func(w io.Writer) {
				kv(w, "description", dash(cfg.Description), "wakeonlan", dash(cfg.WakeOnLAN),
					"startall-onboot-delay", cfg.StartallOnbootDelay, "digest", dash(cfg.Digest))
			})
		},
	}
	var u wire.NodeConfigUpdate
	var desc, wol string
	var delay int
	set := &cobra.Command{
		Use:   "set",
		Short: "Change node options; --digest makes the change fail (exit 4) if someone changed them meanwhile",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			f := c.Flags()
			if f.Changed("description") {
				u.Description = &desc
			}
			if f.Changed("wakeonlan") {
				u.WakeOnLAN = &wol
			}
			if f.Changed("startall-onboot-delay") {
				u.StartallOnbootDelay = &delay
			}
			if u.Description == nil && u.WakeOnLAN == nil && u.StartallOnbootDelay == nil && len(u.Delete) == 0 {
				return usageError{fmt.Errorf("nothing to change: give --description, --wakeonlan, --startall-onboot-delay or --delete")}
			}
			var cfg wire.NodeConfig
			if err := e.do(c.Context(), "PUT", "/api/v1/node/config", u, &cfg); err != nil {
				return err
			}
			return e.show(cfg, func(w io.Writer) { kv(w, "digest", cfg.Digest) })
		},
	}
	f := set.Flags()
	f.StringVar(&desc, "description", "", "node description (shown in the UI)")
	f.StringVar(&wol, "wakeonlan", "", "MAC address for Wake-on-LAN of this node")
	f.IntVar(&delay, "startall-onboot-delay", 0, "seconds to wait before starting onboot guests after boot (0-300)")
	f.StringSliceVar(&u.Delete, "delete", nil, "options to reset (comma-separated)")
	f.StringVar(&u.Digest, "digest", "", "digest of the configuration this change is based on")
	c.AddCommand(get, set)
	return c
}

func (e *env) nodeWOL() *cobra.Command {
	var in wire.WakeOnLANRequest
	c := &cobra.Command{
		Use:   "wakeonlan NODE|MAC",
		Short: "Send a Wake-on-LAN magic packet (UDP port 9, interface broadcast) to a node or MAC",
		Args:  exactArgs(1, "a node name or MAC address"),
		RunE: func(c *cobra.Command, args []string) error {
			in.Target = args[0]
			var res wire.WakeOnLANResult
			if err := e.do(c.Context(), "POST", "/api/v1/node/wakeonlan", in, &res); err != nil {
				return err
			}
			return e.show(res, func(w io.Writer) { kv(w, "mac", res.MAC, "sent to", res.Destination) })
		},
	}
	c.Flags().StringVar(&in.Interface, "interface", "", "interface to send from (default: the one with the default route)")
	return c
}

func (e *env) nodeBulk(verb string) *cobra.Command {
	var in wire.BulkRequest
	var bg bool
	short := "Start onboot guests (all with --force) in startup order, as a task"
	if verb == "stopall" {
		short = "Shut down all guests in reverse startup order, as a task"
	}
	c := &cobra.Command{
		Use:   verb,
		Short: short,
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/node/"+verb, in, bg)
		},
	}
	if verb == "startall" {
		c.Flags().BoolVar(&in.Force, "force", false, "start all guests, not only those marked onboot")
		c.Flags().BoolVar(&in.OnBootDelay, "onboot-delay", false, "wait startall-onboot-delay first, as at boot")
	} else {
		c.Flags().IntVar(&in.Timeout, "timeout", 0, "default shutdown timeout in seconds (guests' own down= wins; default 180)")
		c.Flags().Var(&forceStopFlag{&in.ForceStop}, "force-stop", "1: stop guests hard after their timeout (default); 0: leave them running")
	}
	c.Flags().Var(&idListFlag{&in.Guests}, "guests", "only these guest IDs (comma-separated)")
	asyncFlags(c, &bg)
	return c
}

func (e *env) nodeCerts() *cobra.Command {
	c := &cobra.Command{Use: "cert", Short: "Show the cluster CA and the node certificate"}
	var pemOnly string
	list := &cobra.Command{
		Use:   "list",
		Short: "List certificates with fingerprints and validity",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var cs []wire.CertificateInfo
			if err := e.do(c.Context(), "GET", "/api/v1/node/certificates", nil, &cs); err != nil {
				return err
			}
			if pemOnly != "" {
				for _, ci := range cs {
					if ci.Filename == pemOnly {
						_, err := io.WriteString(e.stdout, ci.PEM)
						return err
					}
				}
				return usageError{fmt.Errorf("--pem %q: no such certificate", pemOnly)}
			}
			return e.show(cs, func(w io.Writer) {
				row(w, "FILE", "SUBJECT", "NOT AFTER", "SAN", "FINGERPRINT")
				for _, ci := range cs {
					row(w, ci.Filename, ci.Subject, ts(ci.NotAfter), dash(strings.Join(ci.SANs, ",")), ci.Fingerprint)
				}
			})
		},
	}
	list.Flags().StringVar(&pemOnly, "pem", "", "print only this certificate's PEM (e.g. berth-root-ca.pem)")
	c.AddCommand(list)
	return c
}

// idListFlag parses "101,102" into guest IDs.
type idListFlag struct{ ids *[]int }

func (f *idListFlag) String() string {
	if f.ids == nil || *f.ids == nil {
		return ""
	}
	parts := make([]string, len(*f.ids))
	for i, id := range *f.ids {
		parts[i] = strconv.Itoa(id)
	}
	return strings.Join(parts, ",")
}

func (f *idListFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		id, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("%q is not a guest ID", p)
		}
		*f.ids = append(*f.ids, id)
	}
	if *f.ids == nil {
		return fmt.Errorf("give guest IDs, e.g. 101,102")
	}
	return nil
}

func (f *idListFlag) Type() string { return "IDS" }

// forceStopFlag takes 0 or 1, as pvenode stopall --force-stop does.
type forceStopFlag struct{ v **bool }

func (f *forceStopFlag) String() string {
	if f.v == nil || *f.v == nil {
		return "1"
	}
	if **f.v {
		return "1"
	}
	return "0"
}

func (f *forceStopFlag) Set(s string) error {
	var b bool
	switch s {
	case "1", "true":
		b = true
	case "0", "false":
	default:
		return fmt.Errorf("%q: use 0 or 1", s)
	}
	*f.v = &b
	return nil
}

func (f *forceStopFlag) Type() string { return "0|1" }
