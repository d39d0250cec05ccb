package ksm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ProcStat is one process's KSM figures from /proc/PID/ksm_stat.
type ProcStat struct {
	RmapItems    uint64
	ZeroPages    uint64
	MergingPages uint64
	Profit       int64
	MergeAny     bool
	Mergeable    bool
}

// ParseProcStat parses the text of /proc/PID/ksm_stat: lines of a name, an
// optional colon and a value. Unknown lines are ignored so newer kernels
// keep working; a known line with a bad value is an error.
func ParseProcStat(text string) (ProcStat, error) {
	var st ProcStat
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		name, val := strings.TrimSuffix(f[0], ":"), f[1]
		var err error
		switch name {
		case "ksm_rmap_items":
			st.RmapItems, err = strconv.ParseUint(val, 10, 64)
		case "ksm_zero_pages":
			st.ZeroPages, err = strconv.ParseUint(val, 10, 64)
		case "ksm_merging_pages":
			st.MergingPages, err = strconv.ParseUint(val, 10, 64)
		case "ksm_process_profit":
			st.Profit, err = strconv.ParseInt(val, 10, 64)
		case "ksm_merge_any":
			st.MergeAny, err = yesNo(val)
		case "ksm_mergeable":
			st.Mergeable, err = yesNo(val)
		}
		if err != nil {
			return st, fmt.Errorf("ksm_stat: %s: bad value %q", name, val)
		}
	}
	return st, nil
}

func yesNo(s string) (bool, error) {
	switch s {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, errors.New("want yes or no")
}

// Proc is a procfs mount point, normally "/proc".
type Proc string

func (p Proc) dir() string {
	if p == "" {
		return "/proc"
	}
	return string(p)
}

// Stat reads pid's ksm_stat. Kernels before 6.1 lack the file; then only
// MergingPages is filled in, from ksm_merging_pages (5.16+).
func (p Proc) Stat(pid int) (ProcStat, error) {
	base := filepath.Join(p.dir(), strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(base, "ksm_stat"))
	if err == nil {
		st, err := ParseProcStat(string(b))
		if err != nil {
			return st, fmt.Errorf("process %d: %w", pid, err)
		}
		return st, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return ProcStat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	b, err = os.ReadFile(filepath.Join(base, "ksm_merging_pages"))
	if err != nil {
		return ProcStat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return ProcStat{}, fmt.Errorf("process %d: ksm_merging_pages: bad number %q", pid, strings.TrimSpace(string(b)))
	}
	return ProcStat{MergingPages: n}, nil
}

// Comm returns pid's command name, or "" if the process is gone.
func (p Proc) Comm(pid int) string {
	b, _ := os.ReadFile(filepath.Join(p.dir(), strconv.Itoa(pid), "comm"))
	return strings.TrimSpace(string(b))
}

// PIDs lists the processes in procfs, ascending.
func (p Proc) PIDs() ([]int, error) {
	ents, err := os.ReadDir(p.dir())
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > 0 {
			pids = append(pids, n)
		}
	}
	slices.Sort(pids)
	return pids, nil
}

// Merging returns the figures of every process with merged pages or
// mergeable memory, keyed by PID. Processes that exit while being read are
// skipped.
func (p Proc) Merging() (map[int]ProcStat, error) {
	pids, err := p.PIDs()
	if err != nil {
		return nil, err
	}
	out := map[int]ProcStat{}
	for _, pid := range pids {
		st, err := p.Stat(pid)
		if err != nil {
			continue // exited, or a kernel thread without the file
		}
		if st.MergingPages > 0 || st.Mergeable || st.MergeAny {
			out[pid] = st
		}
	}
	return out, nil
}

// userHZ is the unit of CPU times in /proc/PID/stat; Linux fixes it at 100
// for every architecture berth runs on.
const userHZ = 100

// ParseCPUTime returns user plus system time from the text of
// /proc/PID/stat. The command name in parentheses may hold spaces and
// parentheses, so fields are counted after the last ')'.
func ParseCPUTime(text string) (time.Duration, error) {
	i := strings.LastIndexByte(text, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after the command name")
	}
	f := strings.Fields(text[i+1:])
	// After the name: state(3) ppid … utime(14) stime(15).
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: bad CPU time %q", s)
		}
		if n > 1<<40 { // 348 years of CPU: not a real value, and it would overflow
			return 0, fmt.Errorf("stat: implausible CPU time %q", s)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// KsmdPID finds the ksmd kernel thread.
func (p Proc) KsmdPID() (int, error) {
	pids, err := p.PIDs()
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		if pid > 1000 {
			break // kernel threads started at boot have small PIDs
		}
		if p.Comm(pid) == "ksmd" {
			return pid, nil
		}
	}
	for _, pid := range pids {
		if pid > 1000 && p.Comm(pid) == "ksmd" {
			return pid, nil
		}
	}
	return 0, errors.New("no ksmd kernel thread")
}

// CPUTime returns pid's user plus system CPU time.
func (p Proc) CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(p.dir(), strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
	}
	return ParseCPUTime(string(b))
}

// ParseMeminfo parses the text of /proc/meminfo (values in KiB). MemTotal
// and MemFree are required; MemAvailable is estimated as free plus buffers
// plus page cache on kernels that lack it.
func ParseMeminfo(text string) (Meminfo, error) {
	var m Meminfo
	seen := map[string]bool{}
	for line := range strings.SplitSeq(text, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch name {
		case "MemTotal":
			dst = &m.Total
		case "MemFree":
			dst = &m.Free
		case "MemAvailable":
			dst = &m.Available
		case "Buffers":
			dst = &m.Buffers
		case "Cached":
			dst = &m.Cached
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return m, fmt.Errorf("meminfo: %s has no value", name)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || n > 1<<53 {
			return m, fmt.Errorf("meminfo: %s: bad value %q", name, f[0])
		}
		*dst = n * 1024
		seen[name] = true
	}
	if !seen["MemTotal"] || !seen["MemFree"] {
		return m, errors.New("meminfo: no MemTotal or MemFree line")
	}
	if !seen["MemAvailable"] {
		m.Available = m.Free + m.Buffers + m.Cached
	}
	m.Available = min(m.Available, m.Total)
	return m, nil
}

// Meminfo reads /proc/meminfo.
func (p Proc) Meminfo() (Meminfo, error) {
	b, err := os.ReadFile(filepath.Join(p.dir(), "meminfo"))
	if err != nil {
		return Meminfo{}, fmt.Errorf("read memory usage: %w", err)
	}
	return ParseMeminfo(string(b))
}

// RSS returns pid's resident memory in bytes, from /proc/PID/statm.
func (p Proc) RSS(pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(p.dir(), strconv.Itoa(pid), "statm"))
	if err != nil {
		return 0, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("process %d: statm: want at least 2 fields", pid)
	}
	n, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process %d: statm: bad resident size %q", pid, f[1])
	}
	return n * uint64(os.Getpagesize()), nil
}
