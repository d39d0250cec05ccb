package ksmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// LockPath is the file whose lock serialises tests and benchmarks that
// change the host's KSM, across test binaries that `go test ./...` runs in
// parallel.
var LockPath = filepath.Join(os.TempDir(), "berth-ksm-host.lock")

// Lock takes the host-wide KSM lock, waiting for other holders, and
// returns its release.
func Lock() (func(), error) {
	f, err := os.OpenFile(LockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open KSM test lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", LockPath, err)
	}
	return func() { f.Close() }, nil
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
