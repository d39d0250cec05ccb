package ksmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/ksm"
)

// Host prepares a test that changes this host's real KSM: it skips without
// BERTH_TEST_ROOT=1 or without KSM, takes the host-wide lock, fails if a
// foreign ksmtuned runs, and at cleanup unmerges every page and restores
// run, pages_to_scan and sleep_millisecs. It returns the KSM sysfs.
func Host(t testing.TB) ksm.Sysfs {
	t.Helper()
	if os.Getenv("BERTH_TEST_ROOT") != "1" {
		t.Skip("changes the host's KSM: set BERTH_TEST_ROOT=1 (make test does, as root)")
	}
	s := ksm.Sysfs{Dir: ksm.DefaultDir}
	if !s.Supported() {
		t.Skip("this kernel has no KSM (/sys/kernel/mm/ksm)")
	}
	// Lock first: a benchmark holding the lock may be running ksmtuned.
	unlock, err := Lock()
	if err != nil {
		t.Fatal(err)
	}
	if pid, name := ForeignTuner(); pid != 0 {
		unlock()
		t.Fatalf("%s (pid %d) runs on this host and would change KSM under the test: stop it (systemctl disable --now ksmtuned)", name, pid)
	}
	restore, err := Save(s.Dir)
	if err != nil {
		unlock()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.SetRun(context.Background(), ksm.RunUnmerge); err != nil {
			t.Error(err)
		}
		if err := restore(); err != nil {
			t.Error(err)
		}
		unlock()
	})
	return s
}

// LockPath is the file whose lock serialises tests and benchmarks that
// change the host's KSM, across test binaries that `go test ./...` runs in
// parallel.
var LockPath = filepath.Join(os.TempDir(), "berth-ksm-host.lock")

// LockWait is how long Lock waits for another holder of LockPath. KSM
// tests hold the lock for well under a minute each, so waiting longer
// means a long holder such as a running `make bench-ksm`: the test then
// fails naming it instead of running into the package's timeout.
// BERTH_KSM_LOCK_WAIT (a Go duration) overrides it.
var LockWait = 4 * time.Minute

// Lock takes the host-wide KSM lock, waiting up to LockWait (or
// BERTH_KSM_LOCK_WAIT) for other holders, and returns its release.
func Lock() (func(), error) {
	wait := LockWait
	if v := os.Getenv("BERTH_KSM_LOCK_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("BERTH_KSM_LOCK_WAIT=%q: %w (use a Go duration such as 10m)", v, err)
		}
		wait = d
	}
	return LockWithin(wait)
}

// LockWithin takes the host-wide KSM lock, waiting at most wait for
// another holder, and records this process's PID and command in the lock
// file so that a waiter that gives up can name the holder.
func LockWithin(wait time.Duration) (func(), error) {
	f, err := os.OpenFile(LockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open KSM test lock: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", LockPath, err)
		}
		if time.Now().After(deadline) {
			holder := holderOf(f)
			f.Close()
			return nil, fmt.Errorf("KSM test lock %s is still held after %s by %s: another test or benchmark (make bench-ksm) is changing this host's KSM; let it finish or stop it, or set BERTH_KSM_LOCK_WAIT to wait longer", LockPath, wait, holder)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd, _ := os.ReadFile("/proc/self/cmdline")
	rec := fmt.Sprintf("%d %s\n", os.Getpid(), strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")))
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(rec), 0)
	}
	return func() {
		f.Truncate(0)
		f.Close()
	}, nil
}

// holderOf describes the process recorded in the lock file f: "pid N
// (COMMAND)", noting when that process no longer exists.
func holderOf(f *os.File) string {
	b := make([]byte, 512)
	n, _ := f.ReadAt(b, 0)
	pidText, cmd, _ := strings.Cut(strings.TrimSpace(string(b[:n])), " ")
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		return "a process that recorded no PID (an older berth test binary?)"
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return fmt.Sprintf("pid %d (%s, no longer running: its lock passed to a child process?)", pid, cmd)
	}
	return fmt.Sprintf("pid %d (%s)", pid, cmd)
}

// MergeFast starts ksmd at a test speed (5000 pages every 10 ms) and
// returns the counters from just before, to count full scans from.
func MergeFast(t testing.TB, s ksm.Sysfs) ksm.Counters {
	t.Helper()
	c0, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetSpeed(5000, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRun(context.Background(), ksm.RunMerge); err != nil {
		t.Fatal(err)
	}
	return c0
}

// saved are the settings a KSM test may change and must restore.
var saved = []string{"pages_to_scan", "sleep_millisecs", "run"}

// Save records run, pages_to_scan and sleep_millisecs of the KSM directory
// dir and returns a function that writes them back (run last, so the old
// speed is in place before ksmd resumes).
func Save(dir string) (func() error, error) {
	vals := map[string]string{}
	for _, name := range saved {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("save KSM %s: %w", name, err)
		}
		vals[name] = strings.TrimSpace(string(b))
	}
	return func() error {
		for _, name := range saved {
			v := vals[name]
			if name == "run" && v == "2" {
				// run=2 would unmerge again; it means "stopped".
				v = "0"
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0); err != nil {
				return fmt.Errorf("restore KSM %s to %s: %w", name, v, err)
			}
		}
		return nil
	}, nil
}

// ForeignTuner returns the PID and name of a ksmtuned process running on
// the host, which would change KSM settings under a test, or 0.
func ForeignTuner() (int, string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for _, a := range args[:min(len(args), 2)] {
			if filepath.Base(a) == "ksmtuned" {
				var pid int
				fmt.Sscan(e.Name(), &pid)
				return pid, a
			}
		}
	}
	return 0, ""
}
