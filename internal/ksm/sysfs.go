// Package ksm controls Kernel Samepage Merging on the host: it reads the
// kernel's counters in /sys/kernel/mm/ksm and each process's share in
// /proc/PID/ksm_stat, starts, stops and unmerges ksmd, keeps the node's KSM
// mode and tuner configuration in the store, runs a tuner that replaces
// Debian's ksmtuned, and gives guest drivers the helpers that let a guest
// opt out of merging. It does not know about HTTP or guest drivers; the api
// package maps guests to processes for it.
package ksm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultDir is where the kernel exposes KSM.
const DefaultDir = "/sys/kernel/mm/ksm"

// Run values of /sys/kernel/mm/ksm/run.
const (
	RunStop    = 0
	RunMerge   = 1
	RunUnmerge = 2
)

// ErrUnsupported means the kernel has no KSM (no /sys/kernel/mm/ksm).
var ErrUnsupported = errors.New("this kernel has no KSM support (no /sys/kernel/mm/ksm): build it with CONFIG_KSM=y")

// Sysfs is a KSM sysfs directory, normally DefaultDir; tests point it at a
// temporary tree.
type Sysfs struct {
	Dir string
}

func (s Sysfs) dir() string {
	if s.Dir == "" {
		return DefaultDir
	}
	return s.Dir
}

// Counters are the values of the KSM sysfs files berth uses.
type Counters struct {
	Run            int
	PagesShared    uint64
	PagesSharing   uint64
	PagesUnshared  uint64
	PagesVolatile  uint64
	FullScans      uint64
	PagesToScan    uint64
	SleepMillisecs uint64
	// GeneralProfit is nil when the kernel does not report it.
	GeneralProfit *int64
}

// Supported tells whether the kernel has KSM.
func (s Sysfs) Supported() bool {
	_, err := os.Stat(filepath.Join(s.dir(), "run"))
	return err == nil
}

// Read reads the counters. It returns ErrUnsupported when the directory
// does not exist.
func (s Sysfs) Read() (Counters, error) {
	var c Counters
	if !s.Supported() {
		return c, ErrUnsupported
	}
	run, err := s.readUint("run")
	if err != nil {
		return c, err
	}
	c.Run = int(run)
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{"pages_shared", &c.PagesShared},
		{"pages_sharing", &c.PagesSharing},
		{"pages_unshared", &c.PagesUnshared},
		{"pages_volatile", &c.PagesVolatile},
		{"full_scans", &c.FullScans},
		{"pages_to_scan", &c.PagesToScan},
		{"sleep_millisecs", &c.SleepMillisecs},
	} {
		if *f.dst, err = s.readUint(f.name); err != nil {
			return c, err
		}
	}
	b, err := os.ReadFile(filepath.Join(s.dir(), "general_profit"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return c, fmt.Errorf("read KSM general_profit: %w", err)
	default:
		p, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return c, fmt.Errorf("parse %s: bad number %q", filepath.Join(s.dir(), "general_profit"), strings.TrimSpace(string(b)))
		}
		c.GeneralProfit = &p
	}
	return c, nil
}

func (s Sysfs) readUint(name string) (uint64, error) {
	p := filepath.Join(s.dir(), name)
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("read KSM %s: %w", name, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: bad number %q", p, strings.TrimSpace(string(b)))
	}
	return n, nil
}

func (s Sysfs) write(name string, v uint64) error {
	p := filepath.Join(s.dir(), name)
	// sysfs attributes are written in place: there is no file to
	// replace, and the kernel applies the value on write.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("set KSM %s: %w", name, err)
	}
	if _, err := f.WriteString(strconv.FormatUint(v, 10)); err != nil {
		f.Close()
		return fmt.Errorf("set KSM %s to %d: %w", name, v, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("set KSM %s to %d: %w", name, v, err)
	}
	return nil
}

// SetRun writes run: RunStop, RunMerge or RunUnmerge. Writing RunUnmerge
// returns when the kernel has broken up every merged page, which can take
// a while for many gigabytes; ctx cannot interrupt the kernel.
func (s Sysfs) SetRun(ctx context.Context, run int) error {
	if run < RunStop || run > RunUnmerge {
		return fmt.Errorf("KSM run value %d: use 0, 1 or 2", run)
	}
	if !s.Supported() {
		return ErrUnsupported
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.write("run", uint64(run))
}

// SetSpeed writes pages_to_scan and sleep_millisecs.
func (s Sysfs) SetSpeed(pagesToScan, sleepMillisecs uint64) error {
	if !s.Supported() {
		return ErrUnsupported
	}
	if err := s.write("pages_to_scan", pagesToScan); err != nil {
		return err
	}
	return s.write("sleep_millisecs", sleepMillisecs)
}

// RunState names a run value.
func RunState(run int) string {
	switch run {
	case RunStop:
		return "stopped"
	case RunMerge:
		return "running"
	case RunUnmerge:
		return "unmerged"
	}
	return fmt.Sprintf("unknown (%d)", run)
}

// SysfsUnder returns the KSM directory of a sysfs mounted at sys; "" means
// the host's /sys.
func SysfsUnder(sys string) Sysfs {
	if sys == "" {
		return Sysfs{Dir: DefaultDir}
	}
	return Sysfs{Dir: filepath.Join(sys, "kernel", "mm", "ksm")}
}
