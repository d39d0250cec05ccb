package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ksm/ksmtest"
)

func (e *env) ksmCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ksm",
		Short: "Kernel Samepage Merging: status, enable, disable, unmerge, tuner configuration",
		Long: `KSM merges identical memory pages of guests (and other processes that allow
it) into one copy-on-write page. berth's tuner starts it when memory runs
short and adapts its speed (mode auto, the default); 'enable' keeps it on,
'disable' keeps it off. KSM makes page-deduplication side channels between
guests possible: hosting providers should disable it, or let tenants' guests
opt out with the guest option ksm=0.`,
	}
	c.AddCommand(e.ksmStatus(), e.ksmEnable(), e.ksmDisable(), e.ksmUnmerge(), e.ksmConfig())
	return c
}

// mib shows pages as MiB, or GiB from 1 GiB up.
func mib(pages uint64) string {
	b := float64(pages * uint64(os.Getpagesize()))
	if b >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", b/(1<<20))
}

func (e *env) ksmStatus() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show KSM counters, memory saved, mode, the tuner's last decision and merged pages per guest/process",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var s wire.KSMStatus
			if err := e.do(c.Context(), "GET", "/api/v1/node/ksm", nil, &s); err != nil {
				return err
			}
			return e.show(s, func(w io.Writer) {
				if !s.Supported {
					kv(w, "state", "unsupported (this kernel has no KSM)", "mode", s.Mode)
					return
				}
				profit := "-"
				if s.GeneralProfit != nil {
					profit = fmt.Sprintf("%.1f MiB", float64(*s.GeneralProfit)/(1<<20))
				}
				tuner := "not running"
				if s.Tuner.Active {
					tuner = "running"
				}
				if s.Tuner.Action != "" {
					tuner += fmt.Sprintf(", last %s at %s: %s", s.Tuner.Action, ts(s.Tuner.Time), s.Tuner.Reason)
				}
				kv(w, "state", fmt.Sprintf("%s (run=%d)", s.State, s.Run),
					"mode", s.Mode,
					"pages shared", s.PagesShared,
					"pages sharing", s.PagesSharing,
					"pages unshared", s.PagesUnshared,
					"pages volatile", s.PagesVolatile,
					"full scans", s.FullScans,
					"memory saved", mib(s.PagesSharing),
					"general profit", profit,
					"speed", fmt.Sprintf("%d pages every %d ms", s.PagesToScan, s.SleepMillisecs),
					"tuner", tuner)
				if len(s.Processes) == 0 {
					return
				}
				fmt.Fprintln(w)
				row(w, "GUEST", "KIND", "KSM CHOICE", "PID", "COMMAND", "MERGED PAGES", "MERGED", "WHOLE PROCESS")
				for _, p := range s.Processes {
					g, k, c := "-", "-", "-"
					if p.Guest != 0 {
						g, k, c = fmt.Sprint(p.Guest), string(p.GuestKind), ksmChoice(p.GuestKSM)
					}
					row(w, g, k, c, p.PID, p.Command, p.MergingPages, mib(p.MergingPages), yes(p.MergeAny))
				}
			})
		},
	}
}

// ksmChoice shows a guest's KSM choice as its option.
func ksmChoice(c string) string {
	switch c {
	case "on":
		return "ksm=1"
	case "off":
		return "ksm=0"
	}
	return "default"
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (e *env) ksmEnable() *cobra.Command {
	var bg bool
	c := &cobra.Command{
		Use:   "enable",
		Short: "Keep KSM on (mode on) and start merging now, as a task; the tuner only adapts the speed",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/node/ksm/enable", nil, bg)
		},
	}
	asyncFlags(c, &bg)
	return c
}

func (e *env) ksmDisable() *cobra.Command {
	var bg bool
	var in wire.KSMDisableRequest
	c := &cobra.Command{
		Use:   "disable",
		Short: "Keep KSM off (mode off) and stop merging, as a task; the tuner leaves it off",
		Long: `Stop ksmd and set the node's KSM mode to off: the tuner will not start KSM
again, and the daemon stops it at every start (after a reboot or if a boot
script started it). Pages merged so far stay merged until written to;
--unmerge splits them at once (as 'berth ksm unmerge'). Undo with
'berth ksm enable' or 'berth ksm config set --mode auto'.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/node/ksm/disable", in, bg)
		},
	}
	c.Flags().BoolVar(&in.Unmerge, "unmerge", false, "also split every merged page (run=2)")
	asyncFlags(c, &bg)
	return c
}

func (e *env) ksmUnmerge() *cobra.Command {
	var bg bool
	c := &cobra.Command{
		Use:   "unmerge",
		Short: "Stop KSM and split every merged page again (run=2), as a task; sets mode off",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/node/ksm/unmerge", nil, bg)
		},
	}
	asyncFlags(c, &bg)
	return c
}

// ksmIntFlags are the integer options of `ksm config set`, flag name =
// JSON name.
var ksmIntFlags = []struct {
	name, usage string
	field       func(u *wire.KSMConfigUpdate) **int
}{
	{"monitor-interval", "seconds between tuner decisions", func(u *wire.KSMConfigUpdate) **int { return &u.MonitorInterval }},
	{"sleep-msec", "ksmd's pause between scans on a 16 GiB host, in ms (scaled by memory)", func(u *wire.KSMConfigUpdate) **int { return &u.SleepMsec }},
	{"npages-boost", "pages_to_scan increase while memory is short or merging progresses", func(u *wire.KSMConfigUpdate) **int { return &u.NpagesBoost }},
	{"npages-decay", "pages_to_scan change (negative) when merging stalls and memory is not short", func(u *wire.KSMConfigUpdate) **int { return &u.NpagesDecay }},
	{"npages-min", "least pages_to_scan", func(u *wire.KSMConfigUpdate) **int { return &u.NpagesMin }},
	{"npages-max", "most pages_to_scan", func(u *wire.KSMConfigUpdate) **int { return &u.NpagesMax }},
	{"thres-coef", "percent of memory that must stay available; below it KSM runs", func(u *wire.KSMConfigUpdate) **int { return &u.ThresCoef }},
	{"thres-const", "least threshold, in KiB", func(u *wire.KSMConfigUpdate) **int { return &u.ThresConst }},
	{"max-cpu", "ksmd CPU cap in percent of one CPU above which the tuner does not boost (0: none)", func(u *wire.KSMConfigUpdate) **int { return &u.MaxCPU }},
}

func (e *env) ksmConfig() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Get or set the KSM mode and the tuner's settings"}
	get := &cobra.Command{
		Use:   "get",
		Short: "Show the KSM mode, tuner settings and digest",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var cfg wire.KSMConfig
			if err := e.do(c.Context(), "GET", "/api/v1/node/ksm/config", nil, &cfg); err != nil {
				return err
			}
			return e.show(cfg, func(w io.Writer) { ksmConfigTable(w, cfg) })
		},
	}
	var u wire.KSMConfigUpdate
	var mode string
	vals := make([]int, len(ksmIntFlags))
	set := &cobra.Command{
		Use:   "set",
		Short: "Change the KSM mode or tuner settings; --digest makes the change fail (exit 4) if someone changed them meanwhile",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			f := c.Flags()
			n := len(u.Delete)
			if f.Changed("mode") {
				u.Mode = &mode
				n++
			}
			for i, fl := range ksmIntFlags {
				if f.Changed(fl.name) {
					*fl.field(&u) = &vals[i]
					n++
				}
			}
			if n == 0 {
				return usageError{fmt.Errorf("nothing to change: give --mode, a tuner option (see --help) or --delete")}
			}
			var cfg wire.KSMConfig
			if err := e.do(c.Context(), "PUT", "/api/v1/node/ksm/config", u, &cfg); err != nil {
				return err
			}
			return e.show(cfg, func(w io.Writer) { ksmConfigTable(w, cfg) })
		},
	}
	f := set.Flags()
	f.StringVar(&mode, "mode", "", "auto (the tuner decides), on (always) or off (never)")
	for i, fl := range ksmIntFlags {
		f.IntVar(&vals[i], fl.name, 0, fl.usage)
	}
	names := make([]string, 0, len(ksmIntFlags)+1)
	names = append(names, "mode")
	for _, fl := range ksmIntFlags {
		names = append(names, fl.name)
	}
	f.StringSliceVar(&u.Delete, "delete", nil, "options to reset to their defaults (comma-separated: "+strings.Join(names, ", ")+")")
	f.StringVar(&u.Digest, "digest", "", "digest of the configuration this change is based on")
	c.AddCommand(get, set)
	return c
}

func ksmConfigTable(w io.Writer, c wire.KSMConfig) {
	kv(w, "mode", c.Mode, "monitor-interval", c.MonitorInterval, "sleep-msec", c.SleepMsec,
		"npages-boost", c.NpagesBoost, "npages-decay", c.NpagesDecay, "npages-min", c.NpagesMin, "npages-max", c.NpagesMax,
		"thres-coef", c.ThresCoef, "thres-const", c.ThresConst, "max-cpu", c.MaxCPU, "digest", dash(c.Digest))
}

// ksmWorkloadCmd is the hidden test workload: a process with SPEC's pages,
// identical across workloads of the same seed (see internal/ksm/ksmtest).
func (e *env) ksmWorkloadCmd() *cobra.Command {
	var hold time.Duration
	c := &cobra.Command{
		Use:    "__ksm-workload SPEC",
		Short:  "Test workload: hold mergeable identical pages until stdin closes (mib=N,seed=S,mark=madvise|process|none)",
		Hidden: true,
		Args:   exactArgs(1, "a spec such as mib=64,seed=1,mark=madvise"),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := ksmtest.ParseSpec(args[0])
			if err != nil {
				return usageError{err}
			}
			in := c.InOrStdin()
			if hold > 0 {
				pr, pw := io.Pipe()
				time.AfterFunc(hold, func() { pw.Close() })
				in = pr
			}
			return ksmtest.Run(s, in, e.stdout)
		},
	}
	c.Flags().DurationVar(&hold, "hold", 0, "hold the pages this long (or until killed) instead of until stdin closes")
	return c
}
