package ksm

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/berthhq/berth/api"
)

// DefaultConfig returns the node's KSM configuration before anyone changed
// it: mode auto, and ksmtuned's defaults except a 10 s monitor interval
// (reading the counters is cheap), a higher npages-max of 10000 (ksmtuned's
// 1250 dates from 2009; scanning faster reaches the same sharing sooner for
// the same ksmd work) bounded by a CPU cap of 50% of one CPU.
func DefaultConfig() api.KSMConfig {
	return api.KSMConfig{
		Mode:            api.KSMModeAuto,
		MonitorInterval: 10,
		SleepMsec:       10,
		NpagesBoost:     300,
		NpagesDecay:     -50,
		NpagesMin:       64,
		NpagesMax:       10000,
		ThresCoef:       20,
		ThresConst:      2048,
		MaxCPU:          50,
	}
}

// ConfigError lists what is wrong with a KSM configuration, keyed by field.
type ConfigError struct {
	Fields map[string]string
}

// Error lists the fields in name order.
func (e *ConfigError) Error() string {
	keys := slices.Sorted(maps.Keys(e.Fields))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + e.Fields[k]
	}
	return "invalid KSM configuration: " + strings.Join(parts, "; ")
}

// FieldErrors returns the per-field messages for the API's error body.
func (e *ConfigError) FieldErrors() map[string]string { return e.Fields }

// ValidateConfig checks c and returns a *ConfigError, or nil.
func ValidateConfig(c api.KSMConfig) error {
	bad := map[string]string{}
	rng := func(name string, v, lo, hi int, why string) {
		if v < lo || v > hi {
			bad[name] = fmt.Sprintf("%d is out of range: use %d to %d%s", v, lo, hi, why)
		}
	}
	switch c.Mode {
	case api.KSMModeAuto, api.KSMModeOn, api.KSMModeOff:
	default:
		bad["mode"] = fmt.Sprintf("%q is not a mode: use auto (the tuner decides), on or off", c.Mode)
	}
	rng("monitor-interval", c.MonitorInterval, 1, 3600, " seconds")
	rng("sleep-msec", c.SleepMsec, 1, 10000, " milliseconds")
	rng("npages-boost", c.NpagesBoost, 0, 100000, "")
	rng("npages-decay", c.NpagesDecay, -100000, 0, " (a decrease, so 0 or negative)")
	rng("npages-min", c.NpagesMin, 1, 100000, " pages")
	rng("npages-max", c.NpagesMax, 1, 100000, " pages")
	if c.NpagesMax < c.NpagesMin {
		bad["npages-max"] = fmt.Sprintf("%d is below npages-min %d: raise npages-max or lower npages-min", c.NpagesMax, c.NpagesMin)
	}
	rng("thres-coef", c.ThresCoef, 0, 100, " percent of memory")
	rng("thres-const", c.ThresConst, 0, 1<<30, " KiB")
	rng("max-cpu", c.MaxCPU, 0, 100, " percent of one CPU (0: no cap)")
	if len(bad) > 0 {
		return &ConfigError{Fields: bad}
	}
	return nil
}

// Meminfo is the part of /proc/meminfo the tuner uses, in bytes.
type Meminfo struct {
	Total, Free, Available, Buffers, Cached uint64
}

// Sample is what the tuner knows at one decision.
type Sample struct {
	Mem Meminfo
	// Committed is the resident memory of running guests, in bytes
	// (ksmtuned sums the RSS of its qemu processes).
	Committed uint64
	KSM       Counters
	// KsmdCPU is ksmd's CPU use since the last decision as a fraction of
	// one CPU; 0 when unknown.
	KsmdCPU float64
}

// State is what the tuner carries from one decision to the next.
type State struct {
	// Started is true when KSM runs because the tuner started it; the
	// tuner stops only what it started.
	Started bool `json:"started"`
	// Npages is the pages_to_scan the tuner last set (0: none yet).
	Npages uint64 `json:"npages,omitempty"`
	// Sharing is pages_sharing at the last decision.
	Sharing uint64 `json:"-"`
	// GainScans is full_scans when merging last progressed.
	GainScans uint64 `json:"-"`
	// Tracking is true when Sharing and GainScans are valid.
	Tracking bool `json:"-"`
	// Idle is true while the tuner has stopped ksmd because merging had
	// converged (run=0 keeps every merged page); IdleAvailable and
	// IdleCommitted are the available memory and the guests' memory at
	// that moment, which decide when to scan again, and IdleTicks counts
	// the decisions since.
	Idle          bool   `json:"-"`
	IdleAvailable uint64 `json:"-"`
	IdleCommitted uint64 `json:"-"`
	IdleTicks     int    `json:"-"`
	// Available is MemAvailable at the last decision, to tell whether
	// memory is falling.
	Available uint64 `json:"-"`
}

// Tuner actions.
const (
	ActStart     = "start"
	ActStop      = "stop"
	ActBoost     = "boost"
	ActDecay     = "decay"
	ActConverged = "converged"
	ActHold      = "hold"
	ActIdle      = "idle"
	ActResume    = "resume"
	ActNone      = "none"
)

// Decision is what the tuner does after one sample. Run is -1 to leave
// run alone; PagesToScan and SleepMillisecs are 0 to leave them alone.
type Decision struct {
	Action         string
	Reason         string
	Run            int
	PagesToScan    uint64
	SleepMillisecs uint64
	Next           State
	// Soon asks for the next decision after RampInterval rather than
	// monitor-interval: ksmd is left scanning faster than npages-min, so
	// the end of merging must be noticed within a scan or two, not after
	// several expensive ones.
	Soon bool
}

// Changes tells whether applying d writes anything to sysfs.
func (d Decision) Changes(c Counters) bool {
	return (d.Run >= 0 && d.Run != c.Run) ||
		(d.PagesToScan != 0 && d.PagesToScan != c.PagesToScan) ||
		(d.SleepMillisecs != 0 && d.SleepMillisecs != c.SleepMillisecs)
}

// convergedScans is how many full scans without a new merge mean that
// merging has converged: a page must be seen unchanged on two scans
// before it can merge, so two quiet scans leave nothing pending.
const convergedScans = 2

// idleRescanTicks is how many decisions an idle tuner waits before it
// scans again anyway (15 minutes at the default 10 s monitor-interval):
// guests rewrite memory without growing, and such new duplicates are only
// found by scanning.
const idleRescanTicks = 90

// idleMargin returns how far available memory may fall, or the guests'
// memory grow, before an idle tuner scans again: 2% of memory and at
// least 64 MiB for the guests, so that ordinary fluctuation of the page
// cache does not restart ksmd but a new guest or a guest filling its
// memory does.
func idleMargin(total, committed uint64) (avail, guests uint64) {
	return total / 50, max(64<<20, committed/20)
}

// quietEnough tells whether merging has converged: no merge in
// convergedScans full scans, or in one full scan when next to no page is
// volatile (first seen or changed on its last check), since only such a
// page can still find a partner on the next scan.
func quietEnough(c Counters, quiet uint64) bool {
	if quiet >= convergedScans {
		return true
	}
	items := c.PagesShared + c.PagesSharing + c.PagesUnshared + c.PagesVolatile
	return quiet >= 1 && c.PagesVolatile*100 <= items
}

// convergedSlowdown multiplies ksmd's pause once merging has converged:
// pages that match merged ones still merge on first sight, and the first
// such gain boosts the speed again.
const convergedSlowdown = 10

// Threshold returns how much memory must stay available, in bytes:
// thres-coef percent of the total, at least thres-const KiB.
func Threshold(c api.KSMConfig, total uint64) uint64 {
	return max(total/100*uint64(c.ThresCoef), uint64(c.ThresConst)*1024)
}

// SleepFor returns ksmd's pause for a host with total bytes of memory:
// sleep-msec for a 16 GiB host, longer on smaller hosts and shorter on
// bigger ones, and at least 10 ms unless sleep-msec itself is smaller (as
// ksmtuned computes it).
func SleepFor(c api.KSMConfig, total uint64) uint64 {
	if total == 0 {
		return uint64(c.SleepMsec)
	}
	scaled := uint64(c.SleepMsec) * (16 << 30) / total
	return max(scaled, min(10, uint64(c.SleepMsec)))
}

// Decide is the tuner: a pure function of the configuration, one sample
// and the previous state. Like ksmtuned it runs KSM while guests' memory
// plus the threshold exceeds the total or available memory falls under the
// threshold, boosting pages_to_scan while memory is short and decaying it
// otherwise. Beyond ksmtuned it boosts harder (at least doubling) while
// memory is short or merging makes progress and asks to decide again soon
// while ksmd scans fast; once merging has converged (a full scan without
// merges adding 1% and next to no volatile page, or two such scans) it
// stops the ksmd it started (idle: merged pages stay merged) while memory
// is not falling, or otherwise drops to npages-min and a ten times longer
// pause; an idle tuner scans again when available memory falls or the
// guests' memory grows by a margin, or after idleRescanTicks decisions. It
// holds back when ksmd exceeds max-cpu, and never stops a KSM it did not
// start.
func Decide(c api.KSMConfig, s Sample, st State) Decision {
	d := Decision{Run: -1, Next: st}
	gib := func(b uint64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }
	if c.Mode == api.KSMModeOff {
		d.Action, d.Reason = ActNone, "mode is off (berth ksm disable): the tuner leaves KSM stopped"
		d.Next = State{}
		return d
	}
	total := s.Mem.Total
	thres := Threshold(c, total)
	sleep := SleepFor(c, total)
	short := s.Mem.Available < thres
	committed := s.Committed+thres > total
	need := c.Mode == api.KSMModeOn || short || committed
	why := fmt.Sprintf("available %s, threshold %s, guests %s of %s", gib(s.Mem.Available), gib(thres), gib(s.Committed), gib(total))

	if !need {
		d.Next = State{}
		if st.Started && s.KSM.Run == RunMerge {
			d.Action, d.Run = ActStop, RunStop
			d.Reason = "memory is plentiful (" + why + "): stopping the KSM the tuner started"
			return d
		}
		d.Action, d.Reason = ActNone, "not needed ("+why+")"
		return d
	}
	clamp := func(n int64) uint64 {
		return uint64(min(max(n, int64(c.NpagesMin)), int64(c.NpagesMax)))
	}
	npages := int64(st.Npages)
	availMargin, guestMargin := idleMargin(total, st.IdleCommitted)
	if s.KSM.Run != RunMerge {
		d.Action = ActStart
		d.Reason = "starting KSM (" + why + ")"
		if c.Mode == api.KSMModeOn {
			d.Reason = "mode is on: starting KSM"
		}
		if st.Idle && s.KSM.Run == RunStop && c.Mode == api.KSMModeAuto {
			fell := st.IdleAvailable > s.Mem.Available && st.IdleAvailable-s.Mem.Available >= availMargin
			grew := s.Committed > st.IdleCommitted && s.Committed-st.IdleCommitted >= guestMargin
			switch {
			case fell:
				d.Reason = fmt.Sprintf("available memory fell by %s since merging converged (%s): scanning again", gib(st.IdleAvailable-s.Mem.Available), why)
			case grew:
				d.Reason = fmt.Sprintf("guests' memory grew by %s since merging converged (%s): scanning again", gib(s.Committed-st.IdleCommitted), why)
			case st.IdleTicks+1 >= idleRescanTicks:
				d.Reason = fmt.Sprintf("idle for %d decisions: scanning again for content that changed in place", st.IdleTicks+1)
			default:
				d.Action = ActIdle
				d.Reason = fmt.Sprintf("merging has converged (%d pages sharing) and memory is steady (%s): ksmd stays stopped, merged pages stay merged", s.KSM.PagesSharing, why)
				d.Next.IdleTicks++
				d.Next.Available = s.Mem.Available
				return d
			}
			d.Action = ActResume
		}
		d.Run = RunMerge
		d.PagesToScan, d.SleepMillisecs = clamp(npages+int64(c.NpagesBoost)), sleep
		d.Next = State{Started: c.Mode == api.KSMModeAuto, Npages: d.PagesToScan,
			Sharing: s.KSM.PagesSharing, GainScans: s.KSM.FullScans, Tracking: true, Available: s.Mem.Available}
		d.Soon = d.PagesToScan > uint64(c.NpagesMin)
		return d
	}
	if npages == 0 {
		npages = int64(s.KSM.PagesToScan)
	}
	next := st
	next.Idle, next.IdleAvailable, next.IdleCommitted, next.IdleTicks = false, 0, 0, 0
	falling := st.Available > s.Mem.Available && st.Available-s.Mem.Available >= availMargin
	next.Available = s.Mem.Available
	if !st.Tracking {
		next.Sharing, next.GainScans, next.Tracking = s.KSM.PagesSharing, s.KSM.FullScans, true
	}
	gain := int64(s.KSM.PagesSharing) - int64(next.Sharing)
	// A gain counts when it adds at least 1% to what is shared: the tail
	// of a merge (or noise) must not keep ksmd at full speed.
	gaining := gain > 0 && gain*100 >= int64(next.Sharing)
	quiet := s.KSM.FullScans - min(next.GainScans, s.KSM.FullScans)
	cpu := s.KsmdCPU * 100
	switch {
	case c.MaxCPU > 0 && cpu > float64(c.MaxCPU):
		// Scale the speed down to what the cap allows: a decay of
		// npages-decay per decision would take minutes from 10000.
		d.Action = ActDecay
		npages = min(npages+int64(c.NpagesDecay), int64(float64(npages)*float64(c.MaxCPU)/cpu))
		d.Reason = fmt.Sprintf("ksmd used %.0f%% of a CPU, above max-cpu %d%%", cpu, c.MaxCPU)
	case gaining:
		d.Action = ActBoost
		npages += max(int64(c.NpagesBoost), npages)
		d.Reason = fmt.Sprintf("merging progresses (+%d pages shared)", gain)
		next.GainScans = s.KSM.FullScans
	case st.Tracking && quietEnough(s.KSM, quiet) && c.Mode == api.KSMModeAuto && st.Started && !falling:
		// ksmtuned keeps ksmd scanning at its rate for good; once a
		// scan finds nothing new and memory is not falling there is
		// nothing to gain until memory changes, so stop ksmd (run=0
		// keeps every merged page) and watch memory instead.
		d.Action, d.Run = ActIdle, RunStop
		d.Reason = fmt.Sprintf("no new merges in %d full scans and memory is not falling (%s): stopping ksmd until memory changes; merged pages stay merged", quiet, why)
		next.Sharing = s.KSM.PagesSharing
		next.Idle, next.IdleAvailable, next.IdleCommitted = true, s.Mem.Available, s.Committed
		d.Next = next
		return d
	case st.Tracking && quietEnough(s.KSM, quiet):
		d.Action = ActConverged
		npages = int64(c.NpagesMin)
		sleep = min(sleep*convergedSlowdown, 1000)
		d.Reason = fmt.Sprintf("no new merges in %d full scans: scanning slowly for new content", quiet)
	case short:
		d.Action = ActBoost
		npages += max(int64(c.NpagesBoost), npages)
		d.Reason = "memory is short (" + why + ")"
	default:
		d.Action = ActDecay
		npages += int64(c.NpagesDecay)
		d.Reason = "merging has stalled and memory is not short (" + why + ")"
	}
	next.Sharing = s.KSM.PagesSharing
	next.Npages = clamp(npages)
	d.PagesToScan, d.SleepMillisecs = next.Npages, sleep
	d.Next = next
	d.Soon = next.Npages > uint64(c.NpagesMin)
	if !d.Changes(s.KSM) {
		d.Action = ActHold
	}
	return d
}
