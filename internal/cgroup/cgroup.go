// Package cgroup places processes in control groups and sets their limits
// on cgroup v2, on cgroup v1 and on hybrid hosts where each controller may
// live on either hierarchy (such as a host whose memory, pids and cpu
// controllers are only on v1 while the unified tree carries none of them).
// For every controller it picks the hierarchy that has it, so one Group is
// a set of directories, one per hierarchy used.
//
// It knows nothing about containers: callers name a group ("berth/101")
// and give Limits. The cgroup mount root is a parameter, so tests can run
// on a temporary tree.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Controllers this package manages.
var Controllers = []string{"memory", "pids", "cpu", "cpuset", "freezer"}

// Layout says where each controller lives.
type Layout struct {
	// Root is the cgroup mount root, normally /sys/fs/cgroup.
	Root string
	// Unified is the cgroup2 mount path, or "" when there is none.
	Unified string
	// V1 maps a controller to its v1 hierarchy mount path.
	V1 map[string]string
	// V2 lists the controllers available at the unified root.
	V2 []string
}

// Detect reads mountinfo (normally /proc/self/mountinfo) and returns the
// layout. Paths in mountinfo are used as they are, so a test may point
// them into a temporary tree.
func Detect(mountinfo io.Reader) (Layout, error) {
	l := Layout{V1: map[string]string{}}
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if sep < 5 || len(f) < sep+4 {
			continue
		}
		mnt, fstype, opts := unescape(f[4]), f[sep+1], f[sep+3]
		switch fstype {
		case "cgroup2":
			if l.Unified == "" {
				l.Unified = mnt
			}
		case "cgroup":
			for _, o := range strings.Split(opts, ",") {
				if slices.Contains(Controllers, o) || o == "cpuacct" {
					if _, ok := l.V1[o]; !ok {
						l.V1[o] = mnt
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return l, fmt.Errorf("read mountinfo: %w", err)
	}
	if l.Unified != "" {
		b, err := os.ReadFile(filepath.Join(l.Unified, "cgroup.controllers"))
		if err == nil {
			l.V2 = strings.Fields(string(b))
		}
	}
	if l.Unified == "" && len(l.V1) == 0 {
		return l, errors.New("no cgroup file system is mounted: mount cgroup2 on /sys/fs/cgroup")
	}
	return l, nil
}

// unescape undoes mountinfo's octal escapes (\040 for space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// DetectHost is Detect on /proc/self/mountinfo.
func DetectHost() (Layout, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Layout{}, fmt.Errorf("detect cgroups: %w", err)
	}
	defer f.Close()
	return Detect(f)
}

// where returns the hierarchy path holding controller c and whether it is
// the unified one; "" if the controller is missing.
func (l Layout) where(c string) (string, bool) {
	if l.Unified != "" && slices.Contains(l.V2, c) {
		return l.Unified, true
	}
	if c == "freezer" && l.Unified != "" {
		// cgroup v2 has a built-in freezer (cgroup.freeze), preferred
		// to v1's on hybrid hosts: every group is on the unified
		// hierarchy anyway (one hierarchy fewer to join per process),
		// and v1 can stall freezing a task between vfork and exec.
		return l.Unified, true
	}
	if p, ok := l.V1[c]; ok {
		return p, false
	}
	return "", false
}

// Has reports whether controller c is available on some hierarchy.
func (l Layout) Has(c string) bool {
	p, _ := l.where(c)
	return p != ""
}

// Describe says which hierarchy serves each controller, for logs and docs.
func (l Layout) Describe() string {
	var parts []string
	for _, c := range Controllers {
		p, v2 := l.where(c)
		switch {
		case p == "":
			parts = append(parts, c+"=none")
		case v2:
			parts = append(parts, c+"=v2")
		default:
			parts = append(parts, c+"=v1")
		}
	}
	return strings.Join(parts, " ")
}

// Limits are the resource limits of a group; zero values mean unlimited
// (or the kernel default).
type Limits struct {
	// MemoryBytes is the RAM limit; SwapBytes the swap allowed on top.
	MemoryBytes, SwapBytes int64
	// Pids is the maximum number of tasks.
	Pids int64
	// CPUQuota is the number of CPUs' worth of time per period (1.5 =
	// one and a half CPUs); 0 is no quota.
	CPUQuota float64
	// CPUWeight is the relative share, 1 to 10000 (100 is the default,
	// like cgroup v2's cpu.weight and Proxmox's cpuunits).
	CPUWeight int
	// CPUs restricts the group to a cpuset such as "0-1"; "" is all.
	CPUs string
}

// Group is one control group across the hierarchies.
type Group struct {
	l    Layout
	name string
	// dirs maps each hierarchy path used to the group's directory in it.
	dirs map[string]string
	// order is the hierarchies of dirs, sorted.
	order []string
	// legacy are the group's directories in v1 hierarchies that earlier
	// berth versions joined and this one does not (freezer, cpuacct on
	// hybrid hosts): a group made by them is removed there too, and
	// legacyFreezer (when not "") is where it may have been frozen.
	legacy        []string
	legacyFreezer string
}

// Open returns the group named name (a relative slash path such as
// "berth/101") without creating anything.
func (l Layout) Open(name string) (*Group, error) {
	name = strings.Trim(name, "/")
	if name == "" || strings.Contains(name, "..") {
		return nil, fmt.Errorf("cgroup name %q is not a relative path", name)
	}
	g := &Group{l: l, name: name, dirs: map[string]string{}}
	for _, c := range Controllers {
		if p, _ := l.where(c); p != "" {
			g.dirs[p] = filepath.Join(p, name)
		}
	}
	if l.Unified != "" {
		g.dirs[l.Unified] = filepath.Join(l.Unified, name)
	} else if p, ok := l.V1["cpuacct"]; ok {
		// CPU accounting: v2's cpu.stat has it where a unified
		// hierarchy exists.
		g.dirs[p] = filepath.Join(p, name)
	}
	for _, c := range []string{"freezer", "cpuacct"} {
		if p, ok := l.V1[c]; ok {
			if _, used := g.dirs[p]; !used {
				g.legacy = append(g.legacy, filepath.Join(p, name))
				if c == "freezer" {
					g.legacyFreezer = filepath.Join(p, name)
				}
			}
		}
	}
	for h := range g.dirs {
		g.order = append(g.order, h)
	}
	slices.Sort(g.order)
	return g, nil
}

// Accounting returns the hierarchies (mount paths) that hold the memory
// and pids controllers, each once, sorted: where a process is counted
// against a group's memory and process limits.
func (l Layout) Accounting() []string {
	var out []string
	for _, c := range []string{"memory", "pids"} {
		if p, _ := l.where(c); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// SelfDirs returns the calling process's group directory in each
// hierarchy of hs (mount paths of l), read from /proc/self/cgroup.
func (l Layout) SelfDirs(hs []string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("own cgroups: %w", err)
	}
	byHier := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			if l.Unified != "" {
				byHier[l.Unified] = parts[2]
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if p, ok := l.V1[c]; ok {
				byHier[p] = parts[2]
			}
		}
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		rel, ok := byHier[h]
		if !ok {
			return nil, fmt.Errorf("own cgroups: no group in %s", h)
		}
		out[i] = filepath.Join(h, rel)
	}
	return out, nil
}

// Hierarchies returns the hierarchies (mount paths) the group uses and
// its directory in each, in the same order.
func (g *Group) Hierarchies() (hs, dirs []string) {
	for _, h := range g.order {
		hs = append(hs, h)
		dirs = append(dirs, g.dirs[h])
	}
	return hs, dirs
}

// Dirs returns the group's directory in each hierarchy, sorted.
func (g *Group) Dirs() []string {
	out := make([]string, 0, len(g.order))
	for _, h := range g.order {
		out = append(out, g.dirs[h])
	}
	slices.Sort(out)
	return out
}

// Create makes the group's directories and applies lim. On cgroup v2 it
// enables the needed controllers in the parents' subtree_control; on v1
// it initialises cpuset from the parent.
//
// Ancestors are prepared once per process and parent directory (see
// prepared); after that a group costs one mkdir per hierarchy plus a
// write per limit that differs from the kernel's default. A group that
// already existed gets every limit written, as Set does.
func (g *Group) Create(lim Limits) error {
	fresh := true
	for _, h := range g.order {
		d := g.dirs[h]
		made, err := g.mkdir(h, d)
		if err != nil {
			return err
		}
		fresh = fresh && made
		if p, ok := g.l.V1["cpuset"]; ok && p == h {
			if err := g.cpusetReady(p, d, made); err != nil {
				return err
			}
		}
	}
	if !fresh {
		return g.Set(lim)
	}
	return g.set(lim, true)
}

// prepared holds, per parent directory of a group, that this process made
// sure of its ancestors (created, v2 controllers enabled, v1 cpuset
// initialised); for the v1 cpuset parent the value says whether new
// children inherit cpus and mems (cgroup.clone_children works), so that
// their copy can be skipped.
var prepared sync.Map // string → bool

// mkdir creates group directory d in hierarchy h, preparing its ancestors
// the first time; it reports whether d was new.
func (g *Group) mkdir(h, d string) (bool, error) {
	parent := filepath.Dir(d)
	if _, ok := prepared.Load(parent); !ok {
		if err := g.prepare(h, parent); err != nil {
			return false, err
		}
	}
	err := unix.Mkdir(d, 0o755)
	if errors.Is(err, unix.ENOENT) {
		// The parent went away since it was prepared.
		prepared.Delete(parent)
		if err := g.prepare(h, parent); err != nil {
			return false, err
		}
		err = unix.Mkdir(d, 0o755)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return false, nil
	}
	return false, fmt.Errorf("create cgroup %s: %w", d, err)
}

// prepare creates parent (a group's parent directory in hierarchy h) and
// its ancestors, enabling v2 controllers along the way or, on the v1
// cpuset hierarchy, initialising cpus and mems and turning on
// clone_children so that new groups inherit them.
func (g *Group) prepare(h, parent string) error {
	if h == g.l.Unified {
		if err := g.enableV2(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", parent, err)
	}
	if p, ok := g.l.V1["cpuset"]; ok && p == h {
		if parent != p {
			if err := initCpuset(p, parent); err != nil {
				return err
			}
		}
		_ = write(filepath.Join(parent, "cgroup.clone_children"), "1")
	}
	prepared.LoadOrStore(parent, false)
	return nil
}

// cpusetReady makes sure v1 cpuset group d has cpus and mems (it refuses
// tasks otherwise). When d is new and its parent is known to pass them on
// (clone_children), nothing is read.
func (g *Group) cpusetReady(root, d string, made bool) error {
	parent := filepath.Dir(d)
	if clones, _ := prepared.Load(parent); made && clones == true {
		return nil
	}
	inherited, err := initCpusetDir(parent, d)
	if err != nil {
		return err
	}
	if made && inherited {
		prepared.Store(parent, true)
	}
	return nil
}

// enableV2 turns on the v2 controllers this package uses in every
// ancestor's cgroup.subtree_control.
func (g *Group) enableV2() error {
	var want []string
	for _, c := range []string{"memory", "pids", "cpu", "cpuset"} {
		if slices.Contains(g.l.V2, c) {
			want = append(want, "+"+c)
		}
	}
	if len(want) == 0 {
		return nil
	}
	// Every ancestor of the group enables them for its children; the
	// group itself is made by the caller.
	dir := g.l.Unified
	parts := strings.Split(g.name, "/")
	for i, part := range parts {
		if err := write(filepath.Join(dir, "cgroup.subtree_control"), strings.Join(want, " ")); err != nil {
			return fmt.Errorf("enable cgroup v2 controllers %v in %s: %w", want, dir, err)
		}
		if i == len(parts)-1 {
			break
		}
		dir = filepath.Join(dir, part)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// initCpuset copies cpuset.cpus and cpuset.mems down from the v1 root to
// dir, creating ancestors: a v1 cpuset group starts empty and refuses
// tasks until both are set.
func initCpuset(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return err
	}
	cur := root
	for _, part := range strings.Split(rel, "/") {
		parent := cur
		cur = filepath.Join(cur, part)
		if err := os.MkdirAll(cur, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", cur, err)
		}
		if _, err := initCpusetDir(parent, cur); err != nil {
			return err
		}
	}
	return nil
}

// initCpusetDir copies cpuset.cpus and cpuset.mems from parent to dir
// where dir's are empty; it reports whether both were set already.
func initCpusetDir(parent, dir string) (bool, error) {
	had := true
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		b, err := readFile(filepath.Join(dir, f))
		if err == nil && strings.TrimSpace(string(b)) != "" {
			continue
		}
		had = false
		pv, err := readFile(filepath.Join(parent, f))
		if err != nil {
			return false, fmt.Errorf("init cpuset: %w", err)
		}
		if err := write(filepath.Join(dir, f), string(pv)); err != nil {
			return false, fmt.Errorf("init cpuset %s: %w", dir, err)
		}
	}
	return had, nil
}

// file returns the group's path of a control file of controller c.
func (g *Group) file(c, name string) (string, bool, error) {
	h, v2 := g.l.where(c)
	if h == "" {
		return "", false, fmt.Errorf("the %s cgroup controller is not available on this host (%s)", c, g.l.Describe())
	}
	return filepath.Join(g.dirs[h], name), v2, nil
}

// write stores val in control file path with plain system calls: os
// file I/O would register every cgroup file (they are pollable) with the
// runtime's poller and remove it again, three system calls more per write.
// O_CREAT keeps it working on the plain directories tests use.
func write(path, val string) error {
	if err := writeFlags(path, val, unix.O_CREAT|unix.O_TRUNC); err != nil {
		return fmt.Errorf("cgroup: write %q to %s: %w", val, path, err)
	}
	return nil
}

// writeOptional is write on a file the kernel may lack (such as
// memory.memsw.limit_in_bytes without swap accounting): a missing file is
// not an error.
func writeOptional(path, val string) error {
	err := writeFlags(path, val, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("cgroup: write %q to %s: %w", val, path, err)
}

func writeFlags(path, val string, flags int) error {
	fd, err := openRetry(path, unix.O_WRONLY|unix.O_CLOEXEC|flags, 0o644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Write(fd, []byte(val))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		case n != len(val):
			return io.ErrShortWrite
		}
		return nil
	}
}

func openRetry(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, mode)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// readFile reads a control file with plain system calls (see write).
func readFile(path string) ([]byte, error) {
	fd, err := openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

// Set applies lim to an existing group. Unlimited values are written as
// such, so Set also lifts limits.
func (g *Group) Set(lim Limits) error { return g.set(lim, false) }

// set applies lim; on a fresh group (just created, every value the
// kernel's default) it writes only what differs from the default.
func (g *Group) set(lim Limits, fresh bool) error {
	if err := g.setMemory(lim, fresh); err != nil {
		return err
	}
	if lim.Pids > 0 || (!fresh && g.l.Has("pids")) {
		p, _, err := g.file("pids", "pids.max")
		if err != nil {
			return err
		}
		v := "max"
		if lim.Pids > 0 {
			v = strconv.FormatInt(lim.Pids, 10)
		}
		if err := write(p, v); err != nil {
			return err
		}
	}
	if err := g.setCPU(lim, fresh); err != nil {
		return err
	}
	if lim.CPUs != "" {
		p, _, err := g.file("cpuset", "cpuset.cpus")
		if err != nil {
			return err
		}
		if err := write(p, lim.CPUs); err != nil {
			return err
		}
	}
	return nil
}

func (g *Group) setMemory(lim Limits, fresh bool) error {
	if lim.MemoryBytes == 0 && (fresh || !g.l.Has("memory")) {
		return nil
	}
	h, v2 := g.l.where("memory")
	if h == "" {
		return fmt.Errorf("a memory limit needs the memory cgroup controller, which this host lacks (%s)", g.l.Describe())
	}
	d := g.dirs[h]
	if v2 {
		mem, swap := "max", "max"
		if lim.MemoryBytes > 0 {
			mem = strconv.FormatInt(lim.MemoryBytes, 10)
			swap = strconv.FormatInt(lim.SwapBytes, 10)
		}
		if err := write(filepath.Join(d, "memory.max"), mem); err != nil {
			return err
		}
		// The whole group is killed together on OOM only when asked;
		// the default kills the biggest task, which keeps init alive.
		return writeOptional(filepath.Join(d, "memory.swap.max"), swap)
	}
	// v1: memsw (RAM + swap) must stay >= the RAM limit, so order the
	// writes by whether the limit grows or shrinks.
	mem, memsw := "-1", "-1"
	if lim.MemoryBytes > 0 {
		mem = strconv.FormatInt(lim.MemoryBytes, 10)
		memsw = strconv.FormatInt(lim.MemoryBytes+lim.SwapBytes, 10)
	}
	swFile := filepath.Join(d, "memory.memsw.limit_in_bytes")
	if !fresh {
		// Lift memsw first so that lowering or raising RAM always fits
		// (a fresh group's is unlimited already).
		_ = writeOptional(swFile, "-1")
	}
	if err := write(filepath.Join(d, "memory.limit_in_bytes"), mem); err != nil {
		return err
	}
	return writeOptional(swFile, memsw)
}

func (g *Group) setCPU(lim Limits, fresh bool) error {
	if !g.l.Has("cpu") {
		if lim.CPUQuota > 0 || lim.CPUWeight > 0 {
			return fmt.Errorf("CPU limits need the cpu cgroup controller, which this host lacks (%s)", g.l.Describe())
		}
		return nil
	}
	h, v2 := g.l.where("cpu")
	d := g.dirs[h]
	const period = 100000
	weight := lim.CPUWeight
	if weight == 0 {
		weight = 100
	}
	// A fresh group has no quota, the default period and weight 100.
	quota, share := !fresh || lim.CPUQuota > 0, !fresh || weight != 100
	if v2 {
		q := "max"
		if lim.CPUQuota > 0 {
			q = strconv.Itoa(int(lim.CPUQuota * period))
		}
		if quota {
			if err := write(filepath.Join(d, "cpu.max"), q+" "+strconv.Itoa(period)); err != nil {
				return err
			}
		}
		if !share {
			return nil
		}
		return write(filepath.Join(d, "cpu.weight"), strconv.Itoa(weight))
	}
	q := "-1"
	if lim.CPUQuota > 0 {
		q = strconv.Itoa(int(lim.CPUQuota * period))
	}
	if !fresh {
		if err := write(filepath.Join(d, "cpu.cfs_period_us"), strconv.Itoa(period)); err != nil {
			return err
		}
	}
	if quota {
		if err := write(filepath.Join(d, "cpu.cfs_quota_us"), q); err != nil {
			return err
		}
	}
	if !share {
		return nil
	}
	// v1 shares: 1024 is the default, as weight 100 is on v2.
	return write(filepath.Join(d, "cpu.shares"), strconv.Itoa(weight*1024/100))
}

// Add moves process pid (all its threads) into the group on every
// hierarchy.
func (g *Group) Add(pid int) error {
	v := strconv.Itoa(pid)
	for _, h := range g.order {
		d := g.dirs[h]
		err := writeFlags(filepath.Join(d, "cgroup.procs"), v, 0)
		if errors.Is(err, unix.ENOSPC) && h == g.l.V1["cpuset"] {
			// A v1 cpuset group without cpus or mems (its parent
			// stopped passing them on): fill them in and retry.
			prepared.Delete(filepath.Dir(d))
			if err = initCpuset(h, d); err == nil {
				err = writeFlags(filepath.Join(d, "cgroup.procs"), v, 0)
			}
		}
		if err != nil {
			return fmt.Errorf("cgroup: add process %d to %s: %w", pid, d, err)
		}
	}
	return nil
}

// Procs returns the PIDs in the group (from the first hierarchy that has
// the group).
func (g *Group) Procs() ([]int, error) {
	var last error
	for _, d := range g.Dirs() {
		b, err := readFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			last = err
			continue
		}
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
		return out, nil
	}
	return nil, last
}

// Freeze stops (true) or thaws (false) every task of the group and waits
// until the kernel reports the new state.
func (g *Group) Freeze(on bool) error {
	h, v2 := g.l.where("freezer")
	if h == "" {
		return fmt.Errorf("freezing needs the freezer cgroup controller, which this host lacks (%s)", g.l.Describe())
	}
	d := g.dirs[h]
	if !on && g.legacyFreezer != "" {
		// A group frozen by an earlier berth version through v1.
		if err := writeOptional(filepath.Join(g.legacyFreezer, "freezer.state"), "THAWED"); err != nil {
			return err
		}
	}
	var file, val, want string
	if v2 {
		file, val, want = "cgroup.freeze", "0", "0"
		if on {
			val, want = "1", "1"
		}
	} else {
		file, val, want = "freezer.state", "THAWED", "THAWED"
		if on {
			val, want = "FROZEN", "FROZEN"
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := write(filepath.Join(d, file), val); err != nil {
			return err
		}
		// A v1 freeze can stall for good: a task frozen between vfork
		// and exec keeps its parent in an unfreezable wait. Thaw and try
		// again after a while, as runc does.
		retry := time.Now().Add(100 * time.Millisecond)
		for {
			st, err := g.Frozen()
			if err == nil && st == on {
				return nil
			}
			if time.Now().After(deadline) {
				if on && !v2 {
					_ = write(filepath.Join(d, file), "THAWED")
				}
				return fmt.Errorf("cgroup %s did not reach %s within 10 seconds", d, want)
			}
			if on && !v2 && time.Now().After(retry) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := write(filepath.Join(d, file), "THAWED"); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// Frozen reports whether the group is frozen.
func (g *Group) Frozen() (bool, error) {
	h, v2 := g.l.where("freezer")
	if h == "" {
		return false, nil
	}
	d := g.dirs[h]
	if g.legacyFreezer != "" {
		if b, err := readFile(filepath.Join(g.legacyFreezer, "freezer.state")); err == nil && strings.TrimSpace(string(b)) != "THAWED" {
			return true, nil
		}
	}
	if v2 {
		b, err := readFile(filepath.Join(d, "cgroup.events"))
		if err != nil {
			return false, err
		}
		return strings.Contains(string(b), "frozen 1"), nil
	}
	b, err := readFile(filepath.Join(d, "freezer.state"))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "FROZEN", nil
}

// MemoryUsage returns the group's current memory use in bytes.
func (g *Group) MemoryUsage() (int64, error) {
	h, v2 := g.l.where("memory")
	if h == "" {
		return 0, errors.New("no memory controller")
	}
	name := "memory.usage_in_bytes"
	if v2 {
		name = "memory.current"
	}
	b, err := readFile(filepath.Join(g.dirs[h], name))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// Remove deletes the group's directories, waiting up to wait for the
// kernel to release a group whose tasks just died. Missing directories are
// not an error. Each directory costs one rmdir; only a busy one is
// retried.
func (g *Group) Remove(wait time.Duration) error {
	var deadline time.Time
	var errs []error
	dirs := make([]string, 0, len(g.order)+len(g.legacy))
	for _, h := range g.order {
		dirs = append(dirs, g.dirs[h])
	}
	for _, d := range append(dirs, g.legacy...) {
		for {
			err := unix.Rmdir(d)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(wait)
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// Kill sends SIGKILL to every process in the group for which owned
// returns true (nil: every process), thawing the group first as frozen
// tasks cannot die, until none of those is left or wait has passed; it
// returns how many processes it signalled. It is for groups whose owner
// is gone, such as those of a container whose daemon crashed before it
// recorded the container's init; owned lets the caller spare processes it
// cannot tell are its own.
func (g *Group) Kill(wait time.Duration, owned func(pid int) bool) (int, error) {
	if fz, _ := g.Frozen(); fz {
		if err := g.Freeze(false); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(wait)
	killed := 0
	for {
		procs, err := g.Procs()
		if err != nil {
			return killed, nil
		}
		n := 0
		for _, pid := range procs {
			if owned == nil || owned(pid) {
				_ = unix.Kill(pid, unix.SIGKILL)
				n++
			}
		}
		killed += n
		if n == 0 {
			return killed, nil
		}
		if time.Now().After(deadline) {
			return killed, fmt.Errorf("cgroup %s: %d processes still alive after SIGKILL", g.name, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
