package ksm_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/ksm/ksmtest"
	"github.com/berthhq/berth/internal/store"
)

func TestMain(m *testing.M) {
	ksmtest.MaybeRun()
	os.Exit(m.Run())
}

// hostKSM gates a test on BERTH_TEST_ROOT=1 and the host's KSM, takes the
// host-wide KSM lock and restores run, pages_to_scan and sleep_millisecs
// when the test ends.
func hostKSM(t *testing.T) ksm.Sysfs { return ksmtest.Host(t) }

func startWorkload(t *testing.T, spec ksmtest.Spec) *ksmtest.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, err := ksmtest.Start(ctx, spec, os.Args[0], "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	return p
}

func merging(t *testing.T, pid int) uint64 {
	t.Helper()
	st, err := ksm.Proc("").Stat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.MergingPages
}

// waitMerged waits until cond holds for the processes' merged pages.
func waitMerged(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newService(t *testing.T, s ksm.Sysfs, guests []ksm.GuestProc) *ksm.Service {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return ksm.New(ksm.Options{Sysfs: s, Store: st, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Guests: func(context.Context) ([]ksm.GuestProc, error) { return guests, nil }})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

type taskLog struct{ t *testing.T }

func (l taskLog) Printf(format string, args ...any) { l.t.Logf("task: "+format, args...) }

// TestHostMergeAndUnmerge runs real workload processes with identical
// pages: the two madvise(MADV_MERGEABLE) ones and the whole-process
// mergeable one (PR_SET_MEMORY_MERGE, as a ksm=1 container) merge once
// berth enables KSM, the unmarked one (a ksm=0 guest) never does, status
// attributes them, and unmerge splits every page again.
func TestHostMergeAndUnmerge(t *testing.T) {
	s := hostKSM(t)
	const mib = 16
	a := startWorkload(t, ksmtest.Spec{MiB: mib, Seed: 7, Mark: ksmtest.MarkMadvise})
	b := startWorkload(t, ksmtest.Spec{MiB: mib, Seed: 7, Mark: ksmtest.MarkMadvise})
	c := startWorkload(t, ksmtest.Spec{MiB: mib, Seed: 7, Mark: ksmtest.MarkProcess})
	optOut := startWorkload(t, ksmtest.Spec{MiB: mib, Seed: 7, Mark: ksmtest.MarkNone})
	pages := uint64(a.Spec.Pages())

	svc := newService(t, s, []ksm.GuestProc{{ID: 101, Kind: api.GuestVM, PID: a.PID()}, {ID: 102, Kind: api.GuestContainer, PID: optOut.PID(), Choice: ksm.ChoiceOff}})
	// Fast scanning so the test takes seconds: enable starts at
	// npages-boost (clamped to npages-max).
	boost, max := 5000, 5000
	if _, err := svc.SetConfig(t.Context(), api.KSMConfigUpdate{NpagesBoost: &boost, NpagesMax: &max}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Enable(t.Context(), taskLog{t}); err != nil {
		t.Fatal(err)
	}
	cnt, err := s.Read()
	if err != nil || cnt.Run != ksm.RunMerge || cnt.PagesToScan != 5000 {
		t.Fatalf("after enable: %+v, %v", cnt, err)
	}
	waitMerged(t, "the mergeable workloads to merge 95% of their pages", 60*time.Second, func() bool {
		return merging(t, a.PID()) >= pages*95/100 && merging(t, b.PID()) >= pages*95/100 && merging(t, c.PID()) >= pages*95/100
	})
	if n := merging(t, optOut.PID()); n != 0 {
		t.Errorf("opted-out workload has %d merged pages, want 0", n)
	}
	st, err := svc.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != api.KSMModeOn || st.Run != 1 || st.State != "running" || st.PagesSharing < 2*pages*95/100 || st.Saved != st.PagesSharing*uint64(os.Getpagesize()) {
		t.Errorf("status: mode %s run %d state %s sharing %d saved %d", st.Mode, st.Run, st.State, st.PagesSharing, st.Saved)
	}
	byPID := map[int]api.KSMProcess{}
	for _, p := range st.Processes {
		byPID[p.PID] = p
	}
	if p := byPID[a.PID()]; p.Guest != 101 || p.GuestKind != api.GuestVM || p.MergingPages < pages*95/100 {
		t.Errorf("guest 101's process: %+v", p)
	}
	if p := byPID[a.PID()]; p.GuestKSM != "default" {
		t.Errorf("guest 101's KSM choice = %q, want default", p.GuestKSM)
	}
	if p, ok := byPID[optOut.PID()]; !ok || p.Guest != 102 || p.MergingPages != 0 || p.GuestKSM != "off" {
		t.Errorf("opted-out guest 102's process: %+v (listed %v)", p, ok)
	}
	if p := byPID[c.PID()]; !p.MergeAny || p.Guest != 0 {
		t.Errorf("whole-process mergeable workload: %+v", p)
	}
	if len(st.Processes) < 2 || st.Processes[0].Guest == 0 {
		t.Errorf("guests are not listed first: %+v", st.Processes)
	}

	if err := svc.Disable(t.Context(), taskLog{t}, true); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*ksmtest.Process{a, b, c} {
		if n := merging(t, p.PID()); n != 0 {
			t.Errorf("after unmerge, process %d has %d merged pages", p.PID(), n)
		}
	}
	cnt, _ = s.Read()
	if cnt.Run != ksm.RunUnmerge || cnt.PagesSharing != 0 {
		t.Errorf("after unmerge: run %d, pages_sharing %d", cnt.Run, cnt.PagesSharing)
	}
	cfg, _ := svc.Config(t.Context())
	if cfg.Mode != api.KSMModeOff {
		t.Errorf("mode after unmerge: %s, want off", cfg.Mode)
	}
	// With mode off, a KSM started behind berth's back is stopped at the
	// next daemon start.
	if err := s.SetRun(t.Context(), ksm.RunMerge); err != nil {
		t.Fatal(err)
	}
	if err := svc.Repair(t.Context()); err != nil {
		t.Fatal(err)
	}
	if cnt, _ := s.Read(); cnt.Run != ksm.RunStop {
		t.Errorf("after repair with mode off: run %d, want 0", cnt.Run)
	}
}

// TestHostTuner runs the real tuner loop against the host's KSM with the
// threshold set so that memory counts as short: it starts KSM, the
// workloads merge, and once the threshold is lowered it stops the KSM it
// started. A manual disable in between wins over the tuner.
func TestHostTuner(t *testing.T) {
	s := hostKSM(t)
	if err := s.SetRun(t.Context(), ksm.RunStop); err != nil {
		t.Fatal(err)
	}
	a := startWorkload(t, ksmtest.Spec{MiB: 8, Seed: 9, Mark: ksmtest.MarkMadvise})
	b := startWorkload(t, ksmtest.Spec{MiB: 8, Seed: 9, Mark: ksmtest.MarkMadvise})
	pages := uint64(a.Spec.Pages())
	svc := newService(t, s, nil)
	hundred, one, boost := 100, 1, 4000
	if _, err := svc.SetConfig(t.Context(), api.KSMConfigUpdate{ThresCoef: &hundred, MonitorInterval: &one, NpagesBoost: &boost}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waitMerged(t, "the tuner to start KSM and the workloads to merge", 60*time.Second, func() bool {
		return merging(t, a.PID()) >= pages*95/100 && merging(t, b.PID()) >= pages*95/100
	})
	st, _ := svc.Status(t.Context())
	if !st.Tuner.Active || !st.Tuner.Started || st.Tuner.Action == "" || st.Tuner.Reason == "" {
		t.Errorf("tuner state: %+v", st.Tuner)
	}
	// Memory is plentiful again: the tuner stops the KSM it started.
	zero := 0
	if _, err := svc.SetConfig(t.Context(), api.KSMConfigUpdate{ThresCoef: &zero}); err != nil {
		t.Fatal(err)
	}
	waitMerged(t, "the tuner to stop KSM", 60*time.Second, func() bool {
		c, _ := s.Read()
		return c.Run == ksm.RunStop
	})
	// Short again, but the admin disabled KSM: the tuner must not start it.
	if _, err := svc.SetConfig(t.Context(), api.KSMConfigUpdate{ThresCoef: &hundred}); err != nil {
		t.Fatal(err)
	}
	waitMerged(t, "the tuner to restart KSM", 60*time.Second, func() bool {
		c, _ := s.Read()
		return c.Run == ksm.RunMerge
	})
	if err := svc.Disable(t.Context(), taskLog{t}, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // two monitor intervals
	if c, _ := s.Read(); c.Run != ksm.RunStop {
		t.Errorf("tuner restarted KSM after a manual disable: run %d", c.Run)
	}
	st, _ = svc.Status(t.Context())
	if st.Tuner.Action != ksm.ActNone || st.Tuner.Started {
		t.Errorf("tuner after disable: %+v", st.Tuner)
	}
}
