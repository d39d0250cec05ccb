package ksm

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berthhq/berth/api"
)

const gib = 1 << 30

// mem is a fake memory source: 16 GiB total with avail GiB available.
func mem(avail uint64) Meminfo {
	return Meminfo{Total: 16 * gib, Free: avail * gib, Available: avail * gib}
}

func TestDecide(t *testing.T) {
	def := DefaultConfig()
	on := def
	on.Mode = api.KSMModeOn
	off := def
	off.Mode = api.KSMModeOff
	capped := def
	capped.MaxCPU = 20
	running := Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 1000, FullScans: 5}
	tracked := State{Started: true, Npages: 600, Sharing: 1000, GainScans: 5, Tracking: true}
	idle := State{Started: true, Npages: 64, Idle: true, IdleAvailable: 3 * gib, IdleCommitted: 2 * gib}
	type want struct {
		Action      string
		Run         int
		PagesToScan uint64
		Sleep       uint64
		Started     bool
	}
	tests := []struct {
		name string
		cfg  api.KSMConfig
		s    Sample
		st   State
		want want
	}{
		{"plenty of memory, stopped: nothing to do", def,
			Sample{Mem: mem(10), KSM: Counters{Run: RunStop, PagesToScan: 100}}, State{},
			want{ActNone, -1, 0, 0, false}},
		{"plenty of memory, running but not started by the tuner: left alone", def,
			Sample{Mem: mem(10), KSM: running}, State{},
			want{ActNone, -1, 0, 0, false}},
		{"plenty of memory, running and started by the tuner: stop", def,
			Sample{Mem: mem(10), KSM: running}, tracked,
			want{ActStop, RunStop, 0, 0, false}},
		{"available under 20%: start with a boost", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunStop, PagesToScan: 100}}, State{},
			want{ActStart, RunMerge, 300, 10, true}},
		{"guests' memory plus threshold over total: start", def,
			Sample{Mem: mem(8), Committed: 13 * gib, KSM: Counters{Run: RunStop}}, State{},
			want{ActStart, RunMerge, 300, 10, true}},
		{"unmerged (run=2) and memory short: start", def,
			Sample{Mem: mem(1), KSM: Counters{Run: RunUnmerge}}, State{},
			want{ActStart, RunMerge, 300, 10, true}},
		{"merging progresses: at least double", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 5000, FullScans: 6}}, tracked,
			want{ActBoost, -1, 1200, 10, true}},
		{"boost is clamped to npages-max", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 8000, SleepMillisecs: 10, PagesSharing: 5000, FullScans: 6}},
			State{Started: true, Npages: 8000, Sharing: 1000, GainScans: 5, Tracking: true},
			want{ActBoost, -1, 10000, 10, true}},
		{"memory short, first scan without merges yet: double", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 1000, FullScans: 5}}, tracked,
			want{ActBoost, -1, 1200, 10, true}},
		{"memory short, small speed: at least npages-boost more", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 100, SleepMillisecs: 10, PagesSharing: 1000, FullScans: 5}},
			State{Started: true, Npages: 100, Sharing: 1000, GainScans: 5, Tracking: true},
			want{ActBoost, -1, 400, 10, true}},
		{"the tail of a merge (under 1% more) does not keep ksmd busy: idle", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 1009, PagesVolatile: 500, FullScans: 7}}, tracked,
			want{ActIdle, RunStop, 0, 0, true}},
		{"two full scans without merges, memory steady: stop ksmd (idle), merged pages stay", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 1000, PagesVolatile: 500, FullScans: 7}},
			State{Started: true, Npages: 600, Sharing: 1000, GainScans: 5, Tracking: true, Available: 3 * gib},
			want{ActIdle, RunStop, 0, 0, true}},
		{"one full scan without merges and nothing volatile: idle at once", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesShared: 100, PagesSharing: 1000, PagesVolatile: 5, FullScans: 6}}, tracked,
			want{ActIdle, RunStop, 0, 0, true}},
		{"one full scan without merges but many volatile pages: keep scanning", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesShared: 100, PagesSharing: 1000, PagesVolatile: 500, FullScans: 6}}, tracked,
			want{ActBoost, -1, 1200, 10, true}},
		{"converged but memory falling: scan slowly instead of stopping", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 1000, FullScans: 7}},
			State{Started: true, Npages: 600, Sharing: 1000, GainScans: 5, Tracking: true, Available: 4 * gib},
			want{ActConverged, -1, 64, 100, true}},
		{"converged, KSM not started by the tuner: slow, never stopped", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 1000, FullScans: 7}},
			State{Npages: 600, Sharing: 1000, GainScans: 5, Tracking: true},
			want{ActConverged, -1, 64, 100, false}},
		{"converged in mode on: slow, never stopped", on,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 1000, FullScans: 7}},
			State{Npages: 600, Sharing: 1000, GainScans: 5, Tracking: true},
			want{ActConverged, -1, 64, 100, false}},
		{"idle, memory steady: ksmd stays stopped", def,
			Sample{Mem: mem(3), Committed: 2 * gib, KSM: Counters{Run: RunStop, PagesToScan: 600, PagesSharing: 1000, FullScans: 7}}, idle,
			want{ActIdle, -1, 0, 0, true}},
		{"idle, available memory fell by more than 2% of RAM: resume", def,
			Sample{Mem: Meminfo{Total: 16 * gib, Available: 3*gib - gib/2}, Committed: 2 * gib, KSM: Counters{Run: RunStop, PagesToScan: 600, PagesSharing: 1000, FullScans: 7}}, idle,
			want{ActResume, RunMerge, 364, 10, true}},
		{"idle, available memory fell by less than 2% of RAM: stay idle", def,
			Sample{Mem: Meminfo{Total: 16 * gib, Available: 3*gib - gib/8}, Committed: 2 * gib, KSM: Counters{Run: RunStop, PagesToScan: 600, PagesSharing: 1000, FullScans: 7}}, idle,
			want{ActIdle, -1, 0, 0, true}},
		{"idle, guests' memory grew: resume", def,
			Sample{Mem: mem(3), Committed: 2*gib + 128<<20, KSM: Counters{Run: RunStop, PagesToScan: 600, PagesSharing: 1000, FullScans: 7}}, idle,
			want{ActResume, RunMerge, 364, 10, true}},
		{"idle for idleRescanTicks decisions: rescan", def,
			Sample{Mem: mem(3), Committed: 2 * gib, KSM: Counters{Run: RunStop, PagesToScan: 600, PagesSharing: 1000, FullScans: 7}},
			State{Started: true, Npages: 64, Idle: true, IdleAvailable: 3 * gib, IdleCommitted: 2 * gib, IdleTicks: idleRescanTicks - 1},
			want{ActResume, RunMerge, 364, 10, true}},
		{"idle and memory plentiful again: nothing to stop", def,
			Sample{Mem: mem(10), KSM: Counters{Run: RunStop, PagesSharing: 1000}}, idle,
			want{ActNone, -1, 0, 0, false}},
		{"idle, but someone started ksmd: track it again", def,
			Sample{Mem: mem(3), Committed: 2 * gib, KSM: Counters{Run: RunMerge, PagesToScan: 64, SleepMillisecs: 100, PagesSharing: 1000, FullScans: 7}}, idle,
			want{ActBoost, -1, 364, 10, true}},
		{"guests committed, memory not short, stalled: ksmtuned decay", def,
			Sample{Mem: mem(8), Committed: 13 * gib, KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 1000, PagesVolatile: 500, FullScans: 6}}, tracked,
			want{ActDecay, -1, 550, 10, true}},
		{"ksmd above max-cpu: scale down to the cap instead of boosting", capped,
			Sample{Mem: mem(3), KsmdCPU: 0.35, KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 5000, FullScans: 6}}, tracked,
			want{ActDecay, -1, 342, 10, true}},
		{"ksmd barely above max-cpu: at least npages-decay less", capped,
			Sample{Mem: mem(3), KsmdCPU: 0.201, KSM: Counters{Run: RunMerge, PagesToScan: 600, SleepMillisecs: 10, PagesSharing: 5000, FullScans: 6}}, tracked,
			want{ActDecay, -1, 550, 10, true}},
		{"mode on, plenty of memory, stopped: start, not owned by the tuner", on,
			Sample{Mem: mem(10), KSM: Counters{Run: RunStop}}, State{},
			want{ActStart, RunMerge, 300, 10, false}},
		{"mode on never stops", on,
			Sample{Mem: mem(10), KSM: running}, State{Npages: 600, Sharing: 1000, GainScans: 5, Tracking: true},
			want{ActDecay, -1, 550, 10, false}},
		{"mode off: nothing, even under pressure", off,
			Sample{Mem: mem(1), KSM: Counters{Run: RunStop}}, tracked,
			want{ActNone, -1, 0, 0, false}},
		{"mode off leaves a running KSM to the disable task", off,
			Sample{Mem: mem(1), KSM: running}, tracked,
			want{ActNone, -1, 0, 0, false}},
		{"speed already right: hold", def,
			Sample{Mem: mem(3), KSM: Counters{Run: RunMerge, PagesToScan: 64, SleepMillisecs: 100, PagesSharing: 1000, FullScans: 9}},
			State{Npages: 64, Sharing: 1000, GainScans: 5, Tracking: true},
			want{ActHold, -1, 64, 100, false}},
		{"small host sleeps longer (ksmtuned scaling)", def,
			Sample{Mem: Meminfo{Total: 4 * gib, Available: gib / 2}, KSM: Counters{Run: RunStop}}, State{},
			want{ActStart, RunMerge, 300, 40, true}},
		{"big host: sleep stays at 10 ms", def,
			Sample{Mem: Meminfo{Total: 256 * gib, Available: gib}, KSM: Counters{Run: RunStop}}, State{},
			want{ActStart, RunMerge, 300, 10, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.cfg, tt.s, tt.st)
			got := want{d.Action, d.Run, d.PagesToScan, d.SleepMillisecs, d.Next.Started}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide mismatch (-want +got):\n%s\nreason: %s", diff, d.Reason)
			}
			if d.Reason == "" {
				t.Error("decision without a reason")
			}
		})
	}
}

// TestDecideSequence drives the tuner through a workload's life with a fake
// memory source: memory runs short, merging progresses and converges, ksmd
// is stopped while memory stays steady, memory falls and scanning resumes,
// a second convergence while memory is still falling only slows down, and
// memory becomes plentiful again.
func TestDecideSequence(t *testing.T) {
	cfg := DefaultConfig()
	var st State
	k := Counters{Run: RunStop, PagesToScan: 100, SleepMillisecs: 20}
	steps := []struct {
		avail    uint64
		sharing  uint64
		volatile uint64
		scans    uint64
		want     string
		wantRun  int
		wantScan uint64
		wantSoon bool
	}{
		{3, 0, 0, 0, ActStart, RunMerge, 300, true},
		{3, 2000, 5000, 1, ActBoost, -1, 600, true},
		{3, 9000, 3000, 2, ActBoost, -1, 1200, true},
		{3, 20000, 200, 4, ActBoost, -1, 2400, true},
		{3, 20000, 0, 5, ActIdle, RunStop, 0, false}, // one quiet scan, nothing volatile
		{3, 20000, 0, 5, ActIdle, -1, 0, false},      // memory steady: stays stopped
		{2, 20000, 0, 5, ActResume, RunMerge, 2700, true},
		{2, 25000, 900, 6, ActBoost, -1, 5400, true},  // the new memory merges
		{1, 25000, 0, 7, ActConverged, -1, 64, false}, // quiet, but memory still falling
		{1, 25000, 0, 8, ActIdle, RunStop, 0, false},
		{12, 25000, 0, 8, ActNone, -1, 0, false},
	}
	for i, s := range steps {
		k.PagesSharing, k.PagesVolatile, k.FullScans = s.sharing, s.volatile, s.scans
		d := Decide(cfg, Sample{Mem: mem(s.avail), KSM: k}, st)
		if d.Action != s.want || d.Run != s.wantRun || d.PagesToScan != s.wantScan || d.Soon != s.wantSoon {
			t.Fatalf("step %d: got %s run=%d pages_to_scan=%d soon=%v, want %s run=%d %d soon=%v (%s)",
				i, d.Action, d.Run, d.PagesToScan, d.Soon, s.want, s.wantRun, s.wantScan, s.wantSoon, d.Reason)
		}
		if d.Run >= 0 {
			k.Run = d.Run
		}
		if d.PagesToScan != 0 {
			k.PagesToScan, k.SleepMillisecs = d.PagesToScan, d.SleepMillisecs
		}
		st = d.Next
	}
}

func TestValidateConfig(t *testing.T) {
	if err := ValidateConfig(DefaultConfig()); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	c := DefaultConfig()
	c.Mode = "sometimes"
	c.NpagesMin, c.NpagesMax = 500, 100
	c.NpagesDecay = 5
	c.ThresCoef = 101
	err := ValidateConfig(c)
	ce, ok := err.(*ConfigError)
	if !ok {
		t.Fatalf("got %v, want *ConfigError", err)
	}
	for _, f := range []string{"mode", "npages-max", "npages-decay", "thres-coef"} {
		if ce.Fields[f] == "" {
			t.Errorf("no error for %s in %v", f, ce.Fields)
		}
	}
	if len(ce.Fields) != 4 {
		t.Errorf("unexpected fields: %v", ce.Fields)
	}
}

func TestApplyUpdate(t *testing.T) {
	cur := DefaultConfig()
	cur.ThresCoef = 50
	cur.Digest = "abc"
	five := 5
	off := api.KSMModeOff
	got, err := ApplyUpdate(cur, api.KSMConfigUpdate{MonitorInterval: &five, Mode: &off, Delete: []string{"thres-coef"}})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.MonitorInterval, want.Mode = 5, off
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if _, err := ApplyUpdate(cur, api.KSMConfigUpdate{Delete: []string{"colour"}}); err == nil {
		t.Error("deleting an unknown option: no error")
	}
	zero := 0
	if _, err := ApplyUpdate(cur, api.KSMConfigUpdate{MonitorInterval: &zero}); err == nil {
		t.Error("monitor-interval 0: no error")
	}
}
