package ksm

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

type discardLog struct{}

func (discardLog) Printf(string, ...any) {}

// fakeHost is a Service on a fake KSM sysfs tree and a fake /proc holding
// only meminfo, with a real store in dir; reopen with the same dir to
// simulate a daemon restart.
func fakeHost(t *testing.T, sys Sysfs, dir string, availKiB int) (*Service, func()) {
	t.Helper()
	proc := filepath.Join(dir, "proc")
	os.MkdirAll(proc, 0o755)
	meminfo := []byte("MemTotal: 16000000 kB\nMemFree: 1000 kB\nMemAvailable: " + itoa(availKiB) + " kB\n")
	if err := os.WriteFile(filepath.Join(proc, "meminfo"), meminfo, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Sysfs: sys, Proc: Proc(proc), Store: st, Log: slog.New(slog.DiscardHandler)}), func() { st.Close() }
}

func itoa(n int) string { return strconv.Itoa(n) }

func run(t *testing.T, s Sysfs) int {
	t.Helper()
	c, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	return c.Run
}

// TestTunerOwnership: the tuner starts KSM under pressure, remembers that
// across a restart, and stops it when memory is plentiful; a KSM it did not
// start is left running.
func TestTunerOwnership(t *testing.T) {
	sys := fakeSysfs(t, ksmFiles())
	dir := t.TempDir()
	svc, closeStore := fakeHost(t, sys, dir, 1000000) // 1 GB of 16 available: short
	d, err := svc.Tick(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d.Action != ActStart || run(t, sys) != RunMerge {
		t.Fatalf("under pressure: %s (%s), run %d", d.Action, d.Reason, run(t, sys))
	}
	closeStore()

	// Restart with plenty of memory: the new service knows it started KSM.
	svc, closeStore = fakeHost(t, sys, dir, 12000000)
	if err := svc.Repair(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d, _ = svc.Tick(t.Context()); d.Action != ActStop || run(t, sys) != RunStop {
		t.Fatalf("after restart with plenty of memory: %s (%s), run %d", d.Action, d.Reason, run(t, sys))
	}
	// Someone else starts KSM: plenty of memory, but not the tuner's to stop.
	if err := sys.SetRun(t.Context(), RunMerge); err != nil {
		t.Fatal(err)
	}
	if d, _ = svc.Tick(t.Context()); d.Action != ActNone || run(t, sys) != RunMerge {
		t.Fatalf("foreign KSM: %s (%s), run %d", d.Action, d.Reason, run(t, sys))
	}
	closeStore()
}

// TestModes: enable, disable and repair on a fake sysfs tree.
func TestModes(t *testing.T) {
	sys := fakeSysfs(t, ksmFiles())
	svc, closeStore := fakeHost(t, sys, t.TempDir(), 12000000)
	defer closeStore()
	if err := svc.Enable(t.Context(), discardLog{}); err != nil {
		t.Fatal(err)
	}
	c, _ := sys.Read()
	if c.Run != RunMerge || c.PagesToScan != 300 || c.SleepMillisecs != SleepFor(DefaultConfig(), 16000000*1024) {
		t.Fatalf("after enable: %+v", c)
	}
	// Mode on: plenty of memory, the tuner keeps it running.
	if d, _ := svc.Tick(t.Context()); d.Run == RunStop || run(t, sys) != RunMerge {
		t.Fatalf("mode on: tuner %s (%s)", d.Action, d.Reason)
	}
	if err := svc.Disable(t.Context(), discardLog{}, false); err != nil {
		t.Fatal(err)
	}
	if run(t, sys) != RunStop {
		t.Fatal("disable left KSM running")
	}
	cfg, _ := svc.Config(t.Context())
	if cfg.Mode != api.KSMModeOff {
		t.Fatalf("mode after disable: %s", cfg.Mode)
	}
	// A stale digest is a conflict; bad values name the field.
	if _, err := svc.SetConfig(t.Context(), api.KSMConfigUpdate{Digest: "stale", Delete: []string{"mode"}}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("stale digest: %v", err)
	}
	bad := -1
	var ce *ConfigError
	if _, err := svc.SetConfig(t.Context(), api.KSMConfigUpdate{MaxCPU: &bad}); !errors.As(err, &ce) || ce.Fields["max-cpu"] == "" {
		t.Errorf("max-cpu -1: %v", err)
	}
	if cfg2, _ := svc.Config(t.Context()); cfg2.Digest != cfg.Digest {
		t.Error("a refused change modified the stored configuration")
	}
	// No KSM in the kernel: a clear error, nothing written.
	none := New(Options{Sysfs: Sysfs{Dir: filepath.Join(t.TempDir(), "none")}, Store: svc.o.Store})
	if err := none.Enable(t.Context(), discardLog{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("enable without KSM: %v", err)
	}
	if st, err := none.Status(t.Context()); err != nil || st.Supported || st.State != "unsupported" {
		t.Errorf("status without KSM: %+v, %v", st, err)
	}
}
