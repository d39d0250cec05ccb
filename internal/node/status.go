package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ksm"
)

// secureBootVar is the EFI global variable that holds the Secure Boot state.
const secureBootVar = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

// statfs is unix.Statfs; tests replace it to get fixed filesystem sizes.
var statfs = unix.Statfs

// Host names where a host's kernel interfaces are mounted. The zero value
// reads the running host.
type Host struct {
	// Proc is the procfs mount point; "" means "/proc".
	Proc string
	// Sys is the sysfs mount point; "" means "/sys".
	Sys string
	// RootFS is the path whose filesystem is reported as the root
	// filesystem; "" means "/".
	RootFS string
}

func (h Host) withDefaults() Host {
	if h.Proc == "" {
		h.Proc = "/proc"
	}
	if h.Sys == "" {
		h.Sys = "/sys"
	}
	if h.RootFS == "" {
		h.RootFS = "/"
	}
	return h
}

// Status reads the host's current status. It fails if a file every Linux
// host has (such as /proc/meminfo) cannot be read or parsed; missing
// optional parts, such as KSM support or EFI variables, are reported as
// zero values. BerthVersion is left empty for the caller to fill in.
func (h Host) Status() (api.NodeStatus, error) {
	h = h.withDefaults()
	var st api.NodeStatus
	var err error

	kernel := filepath.Join(h.Proc, "sys", "kernel")
	if st.Hostname, err = readString(filepath.Join(kernel, "hostname")); err != nil {
		return st, err
	}
	if st.Kernel.Sysname, err = readString(filepath.Join(kernel, "ostype")); err != nil {
		return st, err
	}
	if st.Kernel.Release, err = readString(filepath.Join(kernel, "osrelease")); err != nil {
		return st, err
	}
	if st.Kernel.Version, err = readString(filepath.Join(kernel, "version")); err != nil {
		return st, err
	}
	if st.Uptime, err = readUptime(filepath.Join(h.Proc, "uptime")); err != nil {
		return st, err
	}
	if st.LoadAvg, err = readLoadAvg(filepath.Join(h.Proc, "loadavg")); err != nil {
		return st, err
	}
	if st.CPUInfo, err = readCPUInfo(filepath.Join(h.Proc, "cpuinfo")); err != nil {
		return st, err
	}
	if st.Memory, st.Swap, err = readMemInfo(filepath.Join(h.Proc, "meminfo")); err != nil {
		return st, err
	}
	if st.RootFS, err = fsUsage(h.RootFS); err != nil {
		return st, err
	}
	if st.BootInfo, err = bootInfo(h.Sys); err != nil {
		return st, err
	}
	if st.KSM, err = readKSM(filepath.Join(h.Sys, "kernel", "mm", "ksm")); err != nil {
		return st, err
	}
	return st, nil
}

func readString(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read node status: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// readUptime parses /proc/uptime: "<seconds since boot> <idle seconds>".
func readUptime(path string) (int64, error) {
	s, err := readString(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(s)
	if len(f) < 1 {
		return 0, fmt.Errorf("parse %s: empty file", path)
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil || up < 0 {
		return 0, fmt.Errorf("parse %s: bad uptime %q", path, f[0])
	}
	return int64(up), nil
}

// readLoadAvg parses /proc/loadavg: "0.52 0.58 0.59 1/467 12345".
func readLoadAvg(path string) ([3]float64, error) {
	var avg [3]float64
	s, err := readString(path)
	if err != nil {
		return avg, err
	}
	f := strings.Fields(s)
	if len(f) < 3 {
		return avg, fmt.Errorf("parse %s: want 3 load averages, got %q", path, s)
	}
	for i := range avg {
		if avg[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return avg, fmt.Errorf("parse %s: bad load average %q", path, f[i])
		}
	}
	return avg, nil
}

// readCPUInfo parses /proc/cpuinfo. Each logical CPU is a block starting
// with a "processor" line; "physical id" and "core id" identify its socket
// and core where the architecture reports them.
func readCPUInfo(path string) (api.CPUInfo, error) {
	var ci api.CPUInfo
	f, err := os.Open(path)
	if err != nil {
		return ci, fmt.Errorf("read node status: %w", err)
	}
	defer f.Close()

	sockets := map[string]bool{}
	cores := map[[2]string]bool{}
	var phys string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024) // flags lines are long
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "processor":
			ci.CPUs++
			phys = ""
		case "model name", "Processor", "cpu model":
			if ci.Model == "" {
				ci.Model = val
			}
		case "physical id":
			phys = val
			sockets[val] = true
		case "core id":
			cores[[2]string{phys, val}] = true
		}
	}
	if err := sc.Err(); err != nil {
		return ci, fmt.Errorf("read %s: %w", path, err)
	}
	if ci.CPUs == 0 {
		return ci, fmt.Errorf("parse %s: no processor entries", path)
	}
	ci.Sockets = max(len(sockets), 1)
	ci.Cores = len(cores)
	if ci.Cores == 0 {
		ci.Cores = ci.CPUs
	}
	return ci, nil
}

// readMemInfo parses /proc/meminfo, whose values are in KiB.
func readMemInfo(path string) (api.MemoryUsage, api.SwapUsage, error) {
	var mem api.MemoryUsage
	var swap api.SwapUsage
	f, err := os.Open(path)
	if err != nil {
		return mem, swap, fmt.Errorf("read node status: %w", err)
	}
	defer f.Close()

	kv := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return mem, swap, fmt.Errorf("parse %s: %s: bad value %q", path, key, fields[0])
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		kv[key] = n
	}
	if err := sc.Err(); err != nil {
		return mem, swap, fmt.Errorf("read %s: %w", path, err)
	}
	for _, k := range []string{"MemTotal", "MemFree"} {
		if _, ok := kv[k]; !ok {
			return mem, swap, fmt.Errorf("parse %s: no %s line", path, k)
		}
	}
	mem.Total = kv["MemTotal"]
	mem.Free = kv["MemFree"]
	if avail, ok := kv["MemAvailable"]; ok {
		mem.Available = avail
	} else { // kernels before 3.14
		mem.Available = mem.Free + kv["Buffers"] + kv["Cached"]
	}
	mem.Available = min(mem.Available, mem.Total)
	mem.Used = mem.Total - mem.Available

	swap.Total = kv["SwapTotal"]
	swap.Free = min(kv["SwapFree"], swap.Total)
	swap.Used = swap.Total - swap.Free
	return mem, swap, nil
}

func fsUsage(path string) (api.FSUsage, error) {
	var s unix.Statfs_t
	if err := statfs(path, &s); err != nil {
		return api.FSUsage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(s.Frsize)
	if bs == 0 {
		bs = uint64(s.Bsize)
	}
	return api.FSUsage{
		Total: s.Blocks * bs,
		Used:  (s.Blocks - min(s.Bfree, s.Blocks)) * bs,
		Avail: s.Bavail * bs,
	}, nil
}

// bootInfo reports EFI when the kernel exposes /sys/firmware/efi. The
// SecureBoot variable is 4 bytes of attributes followed by one byte, 1 when
// Secure Boot is enabled.
func bootInfo(sys string) (api.BootInfo, error) {
	efi := filepath.Join(sys, "firmware", "efi")
	if _, err := os.Stat(efi); errors.Is(err, fs.ErrNotExist) {
		return api.BootInfo{Mode: api.BootBIOS}, nil
	} else if err != nil {
		return api.BootInfo{}, fmt.Errorf("read boot mode: %w", err)
	}
	bi := api.BootInfo{Mode: api.BootEFI}
	b, err := os.ReadFile(filepath.Join(efi, "efivars", secureBootVar))
	if err == nil && len(b) == 5 {
		bi.SecureBoot = b[4] == 1
	}
	return bi, nil
}

// readKSM reads the KSM counters through the ksm package. A kernel without
// KSM (no run file) yields zeros; a missing or unreadable counter of a
// kernel with KSM is an error.
func readKSM(dir string) (api.KSM, error) {
	c, err := ksm.Sysfs{Dir: dir}.Read()
	if errors.Is(err, ksm.ErrUnsupported) {
		return api.KSM{}, nil
	}
	if err != nil {
		return api.KSM{}, err
	}
	return api.KSM{Run: c.Run, PagesShared: c.PagesShared, PagesSharing: c.PagesSharing, PagesUnshared: c.PagesUnshared,
		FullScans: c.FullScans, Saved: c.PagesSharing * uint64(os.Getpagesize())}, nil
}
