// Package hostproc finds and measures guest processes on the host through
// pidfiles and /proc: is the process in a pidfile still the one berth
// started, how much CPU and memory does it use, and waiting for it to go.
// It starts nothing itself.
package hostproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is the /proc directory to read ("/proc" on a real host).
type Proc string

// ReadPidfile returns the PID in path, or 0 when the file is missing.
func ReadPidfile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s holds %q, not a PID", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// Alive reports whether pid runs and its command line contains every one
// of marks (so a recycled PID is not mistaken for the guest). Zombies do
// not count as alive.
func (p Proc) Alive(pid int, marks ...string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(filepath.Join(string(p), strconv.Itoa(pid), "cmdline"))
	if err != nil || len(cmdline) == 0 {
		return false
	}
	for _, m := range marks {
		if !bytes.Contains(cmdline, []byte(m)) {
			return false
		}
	}
	st, err := p.stat(pid)
	return err == nil && st.state != "Z" && st.state != "X"
}

// Parent returns pid's parent process ID.
func (p Proc) Parent(pid int) (int, error) {
	st, err := p.stat(pid)
	return st.ppid, err
}

type stat struct {
	ppid         int
	state        string
	utime, stime uint64
	start        uint64
}

func (p Proc) stat(pid int) (stat, error) {
	b, err := os.ReadFile(filepath.Join(string(p), strconv.Itoa(pid), "stat"))
	if err != nil {
		return stat{}, err
	}
	// The command name may hold spaces and parentheses: split after the
	// last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("malformed stat of %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return stat{}, fmt.Errorf("short stat of %d", pid)
	}
	var s stat
	s.state = f[0]
	s.ppid, _ = strconv.Atoi(f[1])
	s.utime, _ = strconv.ParseUint(f[11], 10, 64)
	s.stime, _ = strconv.ParseUint(f[12], 10, 64)
	s.start, _ = strconv.ParseUint(f[19], 10, 64)
	return s, nil
}

// Usage is a process's resource use.
type Usage struct {
	CPUSeconds    float64
	RSSBytes      int64
	UptimeSeconds int64
}

// clkTck is USER_HZ, 100 on every Linux architecture berth runs on.
const clkTck = 100

// Usage reads pid's CPU time, resident memory and age. The process's
// children are not included.
func (p Proc) Usage(pid int) (Usage, error) {
	st, err := p.stat(pid)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{CPUSeconds: float64(st.utime+st.stime) / clkTck}
	if b, err := os.ReadFile(filepath.Join(string(p), strconv.Itoa(pid), "status")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				u.RSSBytes = kb * 1024
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(string(p), "uptime")); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			up, _ := strconv.ParseFloat(f[0], 64)
			u.UptimeSeconds = int64(up - float64(st.start)/clkTck)
		}
	}
	return u, nil
}

// WaitGone polls until pid is no longer alive (as Alive sees it) or ctx
// ends, and reports whether it went.
func (p Proc) WaitGone(ctx context.Context, pid int, marks ...string) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if !p.Alive(pid, marks...) {
			return true
		}
		select {
		case <-ctx.Done():
			return !p.Alive(pid, marks...)
		case <-t.C:
		}
	}
}

// Kill sends SIGKILL to pid if it is still the process marks describe,
// and waits up to 10 seconds for it to go.
func (p Proc) Kill(ctx context.Context, pid int, marks ...string) error {
	if !p.Alive(pid, marks...) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !p.WaitGone(wctx, pid, marks...) {
		return fmt.Errorf("process %d did not exit after SIGKILL", pid)
	}
	return nil
}
