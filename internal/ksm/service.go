package ksm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

// Store keys.
const (
	ConfigKey = "ksm/config"
	tunerKey  = "ksm/tuner"
)

// Logger receives progress lines; the task log satisfies it.
type Logger interface {
	Printf(format string, args ...any)
}

// GuestProc is a running guest's main host process.
type GuestProc struct {
	ID   int
	Kind api.GuestKind
	PID  int
	// Choice is the guest's configured KSM choice (its ksm option).
	Choice Choice
}

// Options configure a Service.
type Options struct {
	Sysfs Sysfs
	Proc  Proc
	Store store.Store
	Log   *slog.Logger
	// Guests lists the running guests' processes; nil means none.
	Guests func(ctx context.Context) ([]GuestProc, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service is the node's KSM control: status, enable, disable, unmerge,
// configuration and the tuner loop. Its methods are safe for concurrent
// use; changes to KSM (tasks and tuner decisions) are serialised so that
// a manual enable or disable always wins over a tuner decision made at the
// same moment.
type Service struct {
	o    Options
	wake chan struct{}

	mu     sync.Mutex // serialises sysfs writes and guards the fields below
	state  State
	loaded bool
	last   api.KSMTunerState
	active bool
	cpuAt  time.Time
	cpuVal time.Duration
	ksmd   int
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{o: o, wake: make(chan struct{}, 1)}
}

// Sysfs returns the KSM directory the service controls.
func (s *Service) Sysfs() Sysfs { return s.o.Sysfs }

// Config returns the stored configuration with its digest, or the
// defaults (and no digest) when it was never set.
func (s *Service) Config(ctx context.Context) (api.KSMConfig, error) {
	c, digest, err := store.GetJSON[api.KSMConfig](ctx, s.o.Store, ConfigKey)
	if errors.Is(err, store.ErrNotFound) {
		return DefaultConfig(), nil
	}
	if err != nil {
		return c, fmt.Errorf("read KSM configuration: %w", err)
	}
	c.Digest = digest
	return c, nil
}

// MergeAllowed reports whether the node lets guests' memory be merged:
// false when the mode is off. Drivers ask it when a guest starts
// (EffectiveChoice). When the mode cannot be read it says no, since a
// guest wrongly left unmergeable only costs memory.
func (s *Service) MergeAllowed(ctx context.Context) bool {
	c, err := s.Config(ctx)
	if err != nil {
		s.o.Log.Warn("KSM: cannot read the node's mode; starting the guest unmergeable", "err", err)
		return false
	}
	return c.Mode != api.KSMModeOff
}

// configFields lists the names Delete accepts and how to reset each.
var configFields = map[string]func(c *api.KSMConfig, d api.KSMConfig){
	"mode":             func(c *api.KSMConfig, d api.KSMConfig) { c.Mode = d.Mode },
	"monitor-interval": func(c *api.KSMConfig, d api.KSMConfig) { c.MonitorInterval = d.MonitorInterval },
	"sleep-msec":       func(c *api.KSMConfig, d api.KSMConfig) { c.SleepMsec = d.SleepMsec },
	"npages-boost":     func(c *api.KSMConfig, d api.KSMConfig) { c.NpagesBoost = d.NpagesBoost },
	"npages-decay":     func(c *api.KSMConfig, d api.KSMConfig) { c.NpagesDecay = d.NpagesDecay },
	"npages-min":       func(c *api.KSMConfig, d api.KSMConfig) { c.NpagesMin = d.NpagesMin },
	"npages-max":       func(c *api.KSMConfig, d api.KSMConfig) { c.NpagesMax = d.NpagesMax },
	"thres-coef":       func(c *api.KSMConfig, d api.KSMConfig) { c.ThresCoef = d.ThresCoef },
	"thres-const":      func(c *api.KSMConfig, d api.KSMConfig) { c.ThresConst = d.ThresConst },
	"max-cpu":          func(c *api.KSMConfig, d api.KSMConfig) { c.MaxCPU = d.MaxCPU },
}

// ApplyUpdate returns cur changed by u, validated. It does not store it.
func ApplyUpdate(cur api.KSMConfig, u api.KSMConfigUpdate) (api.KSMConfig, error) {
	next := cur
	next.Digest = ""
	bad := map[string]string{}
	def := DefaultConfig()
	for _, name := range u.Delete {
		reset, ok := configFields[name]
		if !ok {
			bad["delete"] = fmt.Sprintf("%q is not a KSM option: use one of %s", name, strings.Join(slices.Sorted(maps.Keys(configFields)), ", "))
			continue
		}
		reset(&next, def)
	}
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	if u.Mode != nil {
		next.Mode = *u.Mode
	}
	set(&next.MonitorInterval, u.MonitorInterval)
	set(&next.SleepMsec, u.SleepMsec)
	set(&next.NpagesBoost, u.NpagesBoost)
	set(&next.NpagesDecay, u.NpagesDecay)
	set(&next.NpagesMin, u.NpagesMin)
	set(&next.NpagesMax, u.NpagesMax)
	set(&next.ThresCoef, u.ThresCoef)
	set(&next.ThresConst, u.ThresConst)
	set(&next.MaxCPU, u.MaxCPU)
	var ce *ConfigError
	if err := ValidateConfig(next); errors.As(err, &ce) {
		for k, v := range ce.Fields {
			bad[k] = v
		}
	}
	if len(bad) > 0 {
		return cur, &ConfigError{Fields: bad}
	}
	return next, nil
}

// SetConfig changes the configuration. A u.Digest that is not the stored
// one fails with store.ErrConflict; an invalid result is a *ConfigError
// and nothing changes. The tuner applies the change at once.
func (s *Service) SetConfig(ctx context.Context, u api.KSMConfigUpdate) (api.KSMConfig, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.Config(ctx)
	if err != nil {
		return cur, err
	}
	if u.Digest != "" && u.Digest != cur.Digest {
		return cur, fmt.Errorf("KSM configuration: %w", store.ErrConflict)
	}
	next, err := ApplyUpdate(cur, u)
	if err != nil {
		return cur, err
	}
	digest, err := s.put(ctx, cur, next)
	if err != nil {
		return cur, err
	}
	next.Digest = digest
	if next.Mode != cur.Mode {
		s.o.Log.Info("KSM mode changed", "from", cur.Mode, "to", next.Mode)
	}
	s.kick()
	return next, nil
}

func (s *Service) put(ctx context.Context, cur, next api.KSMConfig) (string, error) {
	cond := store.Cond{Digest: cur.Digest}
	if cur.Digest == "" {
		cond = store.Cond{Create: true}
	}
	next.Digest = ""
	digest, err := store.PutJSON(ctx, s.o.Store, ConfigKey, next, cond)
	if errors.Is(err, store.ErrExists) {
		err = store.ErrConflict
	}
	if err != nil {
		return "", fmt.Errorf("store KSM configuration: %w", err)
	}
	return digest, nil
}

// setMode stores mode; the caller holds s.mu.
func (s *Service) setMode(ctx context.Context, mode string, log Logger) error {
	for range 3 {
		cur, err := s.Config(ctx)
		if err != nil {
			return err
		}
		if cur.Mode == mode {
			log.Printf("KSM mode stays %s", mode)
			return nil
		}
		next := cur
		next.Mode = mode
		_, err = s.put(ctx, cur, next)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		log.Printf("KSM mode: %s (was %s)", mode, cur.Mode)
		s.o.Log.Info("KSM mode changed", "from", cur.Mode, "to", mode)
		return nil
	}
	return fmt.Errorf("KSM configuration kept changing while setting mode %s: retry", mode)
}

func (s *Service) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Enable sets mode on and starts KSM now, at the tuner's starting speed
// unless a speed is already set. The tuner keeps adapting the speed but
// never stops KSM while the mode is on.
func (s *Service) Enable(ctx context.Context, log Logger) error {
	if !s.o.Sysfs.Supported() {
		return ErrUnsupported
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.setMode(ctx, api.KSMModeOn, log); err != nil {
		return err
	}
	cfg, err := s.Config(ctx)
	if err != nil {
		return err
	}
	c, err := s.o.Sysfs.Read()
	if err != nil {
		return err
	}
	if c.Run != RunMerge {
		mem, err := s.o.Proc.Meminfo()
		if err != nil {
			return err
		}
		npages := uint64(min(max(cfg.NpagesBoost, cfg.NpagesMin), cfg.NpagesMax))
		sleep := SleepFor(cfg, mem.Total)
		if err := s.o.Sysfs.SetSpeed(npages, sleep); err != nil {
			return err
		}
		if err := s.o.Sysfs.SetRun(ctx, RunMerge); err != nil {
			return err
		}
		log.Printf("KSM started: pages_to_scan %d, sleep_millisecs %d", npages, sleep)
		s.state = State{Npages: npages}
	} else {
		log.Printf("KSM already running: pages_to_scan %d, sleep_millisecs %d", c.PagesToScan, c.SleepMillisecs)
		s.state.Started = false // it runs because of the mode now
	}
	s.loaded = true
	s.saveState(ctx)
	s.kick()
	return nil
}

// Disable sets mode off and stops KSM; with unmerge it also breaks up
// every merged page (run=2). The tuner then leaves KSM alone until the
// mode changes again.
func (s *Service) Disable(ctx context.Context, log Logger, unmerge bool) error {
	if !s.o.Sysfs.Supported() {
		return ErrUnsupported
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.setMode(ctx, api.KSMModeOff, log); err != nil {
		return err
	}
	s.state = State{}
	s.loaded = true
	s.saveState(ctx)
	c, err := s.o.Sysfs.Read()
	if err != nil {
		return err
	}
	if !unmerge {
		if c.Run == RunMerge {
			if err := s.o.Sysfs.SetRun(ctx, RunStop); err != nil {
				return err
			}
			log.Printf("KSM stopped; %d merged pages stay merged until written to (unmerge to split them now)", c.PagesSharing)
		} else {
			log.Printf("KSM was not running (run=%d)", c.Run)
		}
		return nil
	}
	log.Printf("unmerging %d merged pages (%s of shared memory)", c.PagesSharing, bytesText(c.PagesSharing*uint64(os.Getpagesize())))
	start := s.o.Now()
	if err := s.o.Sysfs.SetRun(ctx, RunUnmerge); err != nil {
		return fmt.Errorf("%w (is memory short? unmerging needs a page for every merged page)", err)
	}
	after, err := s.o.Sysfs.Read()
	if err != nil {
		return err
	}
	log.Printf("unmerged in %s: pages_shared %d, pages_sharing %d", s.o.Now().Sub(start).Round(time.Millisecond), after.PagesShared, after.PagesSharing)
	if after.PagesSharing != 0 {
		return fmt.Errorf("%d pages are still merged after unmerging: check the kernel log", after.PagesSharing)
	}
	return nil
}

func bytesText(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	default:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
}

// Repair makes the kernel match the stored mode after a daemon or host
// start: with mode off a running KSM (started by a boot script or left by
// a crash) is stopped. Modes on and auto are the tuner's job.
func (s *Service) Repair(ctx context.Context) error {
	if !s.o.Sysfs.Supported() {
		return nil
	}
	cfg, err := s.Config(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadState(ctx)
	if cfg.Mode != api.KSMModeOff {
		return nil
	}
	c, err := s.o.Sysfs.Read()
	if err != nil {
		return err
	}
	if c.Run == RunMerge {
		s.o.Log.Warn("KSM was running although the node's KSM mode is off: stopping it")
		return s.o.Sysfs.SetRun(ctx, RunStop)
	}
	return nil
}

func (s *Service) loadState(ctx context.Context) {
	if s.loaded {
		return
	}
	st, _, err := store.GetJSON[State](ctx, s.o.Store, tunerKey)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.o.Log.Warn("read KSM tuner state", "err", err)
	}
	s.state = State{Started: st.Started}
	s.loaded = true
}

func (s *Service) saveState(ctx context.Context) {
	for range 3 {
		old, digest, err := store.GetJSON[State](ctx, s.o.Store, tunerKey)
		cond := store.Cond{Digest: digest}
		if errors.Is(err, store.ErrNotFound) {
			cond = store.Cond{Create: true}
		} else if err != nil {
			s.o.Log.Warn("read KSM tuner state", "err", err)
			return
		} else if old.Started == s.state.Started {
			return
		}
		_, err = store.PutJSON(ctx, s.o.Store, tunerKey, State{Started: s.state.Started}, cond)
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrExists) {
			s.o.Log.Warn("store KSM tuner state", "err", err)
			return
		}
	}
}

// Status reads the counters, the mode, the tuner's state and the
// processes with merged pages, guests first.
func (s *Service) Status(ctx context.Context) (api.KSMStatus, error) {
	cfg, err := s.Config(ctx)
	if err != nil {
		return api.KSMStatus{}, err
	}
	st := api.KSMStatus{Mode: cfg.Mode, Processes: []api.KSMProcess{}}
	s.mu.Lock()
	st.Tuner = s.last
	st.Tuner.Active = s.active
	st.Tuner.Started = s.state.Started
	s.mu.Unlock()
	c, err := s.o.Sysfs.Read()
	if errors.Is(err, ErrUnsupported) {
		st.State = "unsupported"
		return st, nil
	}
	if err != nil {
		return st, err
	}
	st.Supported = true
	st.Run, st.State = c.Run, RunState(c.Run)
	st.PagesShared, st.PagesSharing, st.PagesUnshared, st.PagesVolatile = c.PagesShared, c.PagesSharing, c.PagesUnshared, c.PagesVolatile
	st.FullScans, st.GeneralProfit = c.FullScans, c.GeneralProfit
	st.PagesToScan, st.SleepMillisecs = c.PagesToScan, c.SleepMillisecs
	st.Saved = c.PagesSharing * uint64(os.Getpagesize())
	procs, err := s.processes(ctx)
	if err != nil {
		return st, err
	}
	st.Processes = procs
	return st, nil
}

// processes lists processes with merged pages plus every running guest's
// main process. A process inside a guest (a container's processes) counts
// for that guest: its parents are followed up to a guest's main process.
func (s *Service) processes(ctx context.Context) ([]api.KSMProcess, error) {
	merging, err := s.o.Proc.Merging()
	if err != nil {
		return nil, err
	}
	guests := map[int]GuestProc{}
	if s.o.Guests != nil {
		gs, err := s.o.Guests(ctx)
		if err != nil {
			s.o.Log.Warn("KSM status: list guest processes", "err", err)
		}
		for _, g := range gs {
			if g.PID > 0 {
				guests[g.PID] = g
			}
		}
	}
	var out []api.KSMProcess
	seen := map[int]bool{}
	add := func(pid int, ps ProcStat) {
		p := api.KSMProcess{PID: pid, Command: s.o.Proc.Comm(pid), MergingPages: ps.MergingPages, Profit: ps.Profit, MergeAny: ps.MergeAny}
		if g, ok := s.guestOf(pid, guests); ok {
			p.Guest, p.GuestKind, p.GuestKSM = g.ID, g.Kind, g.Choice.String()
		}
		out = append(out, p)
		seen[pid] = true
	}
	for pid, ps := range merging {
		if ps.MergingPages > 0 {
			add(pid, ps)
		}
	}
	for pid := range guests {
		if !seen[pid] {
			ps, err := s.o.Proc.Stat(pid)
			if err == nil {
				add(pid, ps)
			}
		}
	}
	slices.SortFunc(out, func(a, b api.KSMProcess) int {
		if (a.Guest == 0) != (b.Guest == 0) {
			if a.Guest != 0 {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Guest, b.Guest), cmp.Compare(a.PID, b.PID))
	})
	return out, nil
}

func (s *Service) guestOf(pid int, guests map[int]GuestProc) (GuestProc, bool) {
	for range 64 {
		if g, ok := guests[pid]; ok {
			return g, true
		}
		pp := s.o.Proc.PPID(pid)
		if pp <= 1 {
			return GuestProc{}, false
		}
		pid = pp
	}
	return GuestProc{}, false
}

// PPID returns pid's parent, or 0 when it cannot be read.
func (p Proc) PPID(pid int) int {
	b, err := os.ReadFile(filepath.Join(p.dir(), strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	text := string(b)
	i := strings.LastIndexByte(text, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(text[i+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// RampInterval is how soon the tuner decides again while ksmd scans
// faster than npages-min (Decision.Soon), when that is sooner than
// monitor-interval: ramping up in seconds rather than minutes gets merging
// done sooner, the ksmd CPU figure each decision sees keeps the ramp under
// max-cpu, and the end of merging is noticed before ksmd has spent several
// full scans at top speed finding nothing.
const RampInterval = 2 * time.Second

// Run runs the tuner until ctx is cancelled: one decision at once and then
// every monitor-interval seconds (RampInterval while ksmd scans fast), or as
// soon as the configuration or mode changes.
func (s *Service) Run(ctx context.Context) {
	if !s.o.Sysfs.Supported() {
		s.o.Log.Info("KSM tuner not started: this kernel has no KSM")
		return
	}
	s.mu.Lock()
	s.active = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active = false
		s.mu.Unlock()
	}()
	// The first decision sees every change made so far.
	select {
	case <-s.wake:
	default:
	}
	for {
		interval := 10 * time.Second
		d, err := s.Tick(ctx)
		if err != nil && ctx.Err() == nil {
			s.o.Log.Warn("KSM tuner", "err", err)
		}
		if cfg, err := s.Config(ctx); err == nil {
			interval = time.Duration(cfg.MonitorInterval) * time.Second
		}
		if d.Soon {
			interval = min(interval, RampInterval)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// Tick takes one sample, decides and applies the decision.
func (s *Service) Tick(ctx context.Context) (Decision, error) {
	mem, err := s.o.Proc.Meminfo()
	if err != nil {
		return Decision{}, err
	}
	committed := s.committed(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadState(ctx)
	cfg, err := s.Config(ctx)
	if err != nil {
		return Decision{}, err
	}
	c, err := s.o.Sysfs.Read()
	if err != nil {
		return Decision{}, err
	}
	smp := Sample{Mem: mem, Committed: committed, KSM: c, KsmdCPU: s.ksmdCPU()}
	d := Decide(cfg, smp, s.state)
	// Ownership is recorded before starting and after stopping, so that a
	// crash in between never leaves a tuner-started KSM that the next
	// daemon does not know it may stop.
	wasStarted := s.state.Started
	if d.Next.Started && !wasStarted {
		s.state.Started = true
		s.saveState(ctx)
	}
	if err := s.apply(ctx, d, c); err != nil {
		return d, err
	}
	s.state = d.Next
	if wasStarted && !d.Next.Started {
		s.saveState(ctx)
	}
	changed := d.Changes(c)
	s.last = api.KSMTunerState{Time: s.o.Now().Unix(), Action: d.Action, Reason: d.Reason}
	if changed {
		run := c.Run
		if d.Run >= 0 {
			run = d.Run
		}
		s.o.Log.Info("KSM tuner", "action", d.Action, "reason", d.Reason, "run", run,
			"pages_to_scan", cmp.Or(d.PagesToScan, c.PagesToScan), "sleep_millisecs", cmp.Or(d.SleepMillisecs, c.SleepMillisecs),
			"pages_sharing", c.PagesSharing, "full_scans", c.FullScans, "ksmd_cpu", fmt.Sprintf("%.0f%%", smp.KsmdCPU*100))
	} else {
		s.o.Log.Debug("KSM tuner", "action", d.Action, "reason", d.Reason, "pages_sharing", c.PagesSharing, "full_scans", c.FullScans)
	}
	return d, nil
}

func (s *Service) apply(ctx context.Context, d Decision, c Counters) error {
	if d.PagesToScan != 0 && (d.PagesToScan != c.PagesToScan || d.SleepMillisecs != c.SleepMillisecs) {
		if err := s.o.Sysfs.SetSpeed(d.PagesToScan, d.SleepMillisecs); err != nil {
			return err
		}
	}
	if d.Run >= 0 && d.Run != c.Run {
		return s.o.Sysfs.SetRun(ctx, d.Run)
	}
	return nil
}

// committed sums the resident memory of the running guests.
func (s *Service) committed(ctx context.Context) uint64 {
	if s.o.Guests == nil {
		return 0
	}
	gs, err := s.o.Guests(ctx)
	if err != nil {
		s.o.Log.Warn("KSM tuner: list guest processes", "err", err)
	}
	var sum uint64
	for _, g := range gs {
		if g.PID > 0 {
			if n, err := s.o.Proc.RSS(g.PID); err == nil {
				sum += n
			}
		}
	}
	return sum
}

// ksmdCPU returns ksmd's CPU use since the last call as a fraction of one
// CPU, 0 on the first call or when ksmd cannot be read. The caller holds
// s.mu.
func (s *Service) ksmdCPU() float64 {
	if s.ksmd == 0 {
		pid, err := s.o.Proc.KsmdPID()
		if err != nil {
			return 0
		}
		s.ksmd = pid
	}
	t, err := s.o.Proc.CPUTime(s.ksmd)
	if err != nil {
		s.ksmd = 0
		return 0
	}
	now := s.o.Now()
	prevAt, prev := s.cpuAt, s.cpuVal
	s.cpuAt, s.cpuVal = now, t
	if prevAt.IsZero() || !now.After(prevAt) || t < prev {
		return 0
	}
	return float64(t-prev) / float64(now.Sub(prevAt))
}
