package cgroup

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/google/go-cmp/cmp"
)

// hybrid is this project's host: every controller on v1, the unified tree
// with none of them.
func hybrid(root string) string {
	var b strings.Builder
	for i, c := range []string{"cpu", "cpuacct", "cpuset", "memory", "freezer", "pids"} {
		b.WriteString(strings.Join([]string{"3" + string(rune('0'+i)), "25", "0:2" + string(rune('0'+i)), "/", filepath.Join(root, c),
			"rw,relatime", "shared:1", "-", "cgroup", "cgroup", "rw," + c}, " ") + "\n")
	}
	b.WriteString("40 25 0:30 / " + filepath.Join(root, "unified") + " rw,relatime - cgroup2 cgroup2 rw\n")
	b.WriteString("41 25 0:31 / /proc rw - proc proc rw\n")
	return b.String()
}

func TestDetectHybridAndSet(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"cpu", "cpuacct", "cpuset", "memory", "freezer", "pids", "unified"} {
		os.MkdirAll(filepath.Join(root, c), 0o755)
	}
	os.WriteFile(filepath.Join(root, "unified/cgroup.controllers"), []byte("hugetlb\n"), 0o644)
	os.WriteFile(filepath.Join(root, "cpuset/cpuset.cpus"), []byte("0-1\n"), 0o644)
	os.WriteFile(filepath.Join(root, "cpuset/cpuset.mems"), []byte("0\n"), 0o644)
	l, err := Detect(strings.NewReader(hybrid(root)))
	if err != nil {
		t.Fatal(err)
	}
	// The freezer is v2's built-in one where a unified hierarchy exists.
	if got, want := l.Describe(), "memory=v1 pids=v1 cpu=v1 cpuset=v1 freezer=v2"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	g, err := l.Open("berth/101")
	if err != nil {
		t.Fatal(err)
	}
	// A process joins one directory per hierarchy in use: not v1's
	// freezer, nor cpuacct (v2's cpu.stat accounts).
	var hs []string
	for _, d := range g.Dirs() {
		rel, _ := filepath.Rel(root, d)
		hs = append(hs, strings.Split(rel, "/")[0])
	}
	if got, want := strings.Join(hs, " "), "cpu cpuset memory pids unified"; got != want {
		t.Errorf("hierarchies joined: %q, want %q", got, want)
	}
	if err := g.Create(Limits{MemoryBytes: 64 << 20, Pids: 100, CPUQuota: 0.5, CPUWeight: 200, CPUs: "0"}); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(root, p))
		return strings.TrimSpace(string(b))
	}
	got := map[string]string{
		"memory": read("memory/berth/101/memory.limit_in_bytes"),
		"pids":   read("pids/berth/101/pids.max"),
		"quota":  read("cpu/berth/101/cpu.cfs_quota_us"),
		"shares": read("cpu/berth/101/cpu.shares"),
		"cpus":   read("cpuset/berth/101/cpuset.cpus"),
		"mems":   read("cpuset/berth/101/cpuset.mems"),
		"unified": func() string {
			_, err := os.Stat(filepath.Join(root, "unified/berth/101"))
			return "dir" + errString(err)
		}(),
	}
	want := map[string]string{"memory": "67108864", "pids": "100", "quota": "50000", "shares": "2048", "cpus": "0", "mems": "0", "unified": "dir<nil>"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("limits mismatch (-want +got):\n%s", diff)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestDetectV2(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
	l, err := Detect(strings.NewReader("30 1 0:26 / " + root + " rw - cgroup2 cgroup2 rw\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.Describe(), "memory=v2 pids=v2 cpu=v2 cpuset=v2 freezer=v2"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	g, _ := l.Open("berth/7")
	if err := g.Create(Limits{MemoryBytes: 1 << 30, CPUQuota: 1.5}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(root, "berth/7/cpu.max"))
	if string(b) != "150000 100000" {
		t.Errorf("cpu.max = %q", b)
	}
	b, _ = os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
	if !strings.Contains(string(b), "+memory") {
		t.Errorf("subtree_control = %q", b)
	}
}

func TestDetectNone(t *testing.T) {
	if _, err := Detect(strings.NewReader("41 25 0:31 / /proc rw - proc proc rw\n")); err == nil {
		t.Error("Detect without cgroups succeeded")
	}
	if _, err := (Layout{Unified: "/x"}).Open("../escape"); err == nil {
		t.Error("Open accepted a path escape")
	}
}

func FuzzDetect(f *testing.F) {
	f.Add(hybrid("/sys/fs/cgroup"))
	f.Add("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
	f.Add("1 2 3 4 /a\\040b - cgroup x rw,memory\n")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Detect(strings.NewReader(s))
		if err != nil {
			return
		}
		_ = l.Describe()
		for c, p := range l.V1 {
			if p == "" {
				t.Fatalf("controller %s with an empty path", c)
			}
		}
	})
}

// TestCreateWritesOnlyNonDefaults: a new group gets only the limits that
// differ from the kernel's defaults written; a group that existed already
// gets every value written, lifting old limits (plain directories stand in
// for cgroup v2 here: a file exists only once written).
func TestCreateWritesOnlyNonDefaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		again bool // Create a second time (the group exists)
		lim   Limits
		want  map[string]string // file → content; "" = not written
	}{
		{name: "fresh unlimited", lim: Limits{},
			want: map[string]string{"memory.max": "", "memory.swap.max": "", "pids.max": "", "cpu.max": "", "cpu.weight": "", "cpuset.cpus": ""}},
		{name: "fresh limited", lim: Limits{MemoryBytes: 1 << 30, Pids: 64, CPUQuota: 0.5, CPUWeight: 300, CPUs: "0"},
			want: map[string]string{"memory.max": "1073741824", "pids.max": "64", "cpu.max": "50000 100000", "cpu.weight": "300", "cpuset.cpus": "0"}},
		{name: "fresh default weight", lim: Limits{CPUWeight: 100},
			want: map[string]string{"cpu.weight": ""}},
		{name: "existing unlimited", again: true, lim: Limits{},
			want: map[string]string{"memory.max": "max", "pids.max": "max", "cpu.max": "max 100000", "cpu.weight": "100", "cpuset.cpus": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
			l, err := Detect(strings.NewReader("30 1 0:26 / " + root + " rw - cgroup2 cgroup2 rw\n"))
			if err != nil {
				t.Fatal(err)
			}
			g, _ := l.Open("berth/9")
			if tc.again {
				if err := g.Create(Limits{MemoryBytes: 1 << 20, Pids: 5}); err != nil {
					t.Fatal(err)
				}
			}
			if err := g.Create(tc.lim); err != nil {
				t.Fatal(err)
			}
			for f, want := range tc.want {
				b, err := os.ReadFile(filepath.Join(root, "berth/9", f))
				if got := strings.TrimSpace(string(b)); err == nil && got != want || err != nil && want != "" {
					t.Errorf("%s = %q (%v), want %q", f, got, err, want)
				}
			}
		})
	}
}

// hostLayout is the host's cgroup layout, for tests that make real
// cgroups (root only).
func hostLayout(t *testing.T) Layout {
	t.Helper()
	if os.Getenv("BERTH_TEST_ROOT") != "1" || os.Geteuid() != 0 {
		t.Skip("needs root and BERTH_TEST_ROOT=1 (make test sets it as root): creates cgroups")
	}
	l, err := DetectHost()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestHostGroup runs a group through its life on this host's real cgroup
// hierarchies: limits read back from the kernel, a process added to every
// hierarchy, removal refused while it lives, Kill, then nothing left.
func TestHostGroup(t *testing.T) {
	l := hostLayout(t)
	parent := "berth-cgtest-" + strconv.Itoa(os.Getpid())
	t.Cleanup(func() {
		p, _ := l.Open(parent)
		_ = p.Remove(time.Second)
	})
	read := func(g *Group, c, f string) string {
		p, _, err := g.file(c, f)
		if err != nil {
			return err.Error()
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(string(b))
	}
	memFile, pidsFile := "memory.limit_in_bytes", "pids.max"
	if _, v2 := l.where("memory"); v2 {
		memFile = "memory.max"
	}
	for i, tc := range []struct {
		name     string
		lim      Limits
		mem, pid string
	}{
		{name: "limits", lim: Limits{MemoryBytes: 64 << 20, Pids: 50, CPUQuota: 0.5, CPUWeight: 200, CPUs: "0"}, mem: "67108864", pid: "50"},
		{name: "unlimited", lim: Limits{}, pid: "max"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := l.Open(parent + "/" + strconv.Itoa(i))
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Create(tc.lim); err != nil {
				t.Fatal(err)
			}
			if tc.mem != "" {
				if got := read(g, "memory", memFile); got != tc.mem {
					t.Errorf("%s = %s, want %s", memFile, got, tc.mem)
				}
			}
			if got := read(g, "pids", pidsFile); got != tc.pid {
				t.Errorf("pids.max = %s, want %s", got, tc.pid)
			}
			if tc.lim.CPUs != "" {
				if got := read(g, "cpuset", "cpuset.cpus"); got != tc.lim.CPUs {
					t.Errorf("cpuset.cpus = %s, want %s", got, tc.lim.CPUs)
				}
			}
			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			if err := g.Add(cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			for _, d := range g.Dirs() {
				b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				if err != nil || !slices.Contains(strings.Fields(string(b)), strconv.Itoa(cmd.Process.Pid)) {
					t.Errorf("pid %d not in %s: %q %v", cmd.Process.Pid, d, b, err)
				}
			}
			if err := g.Remove(20 * time.Millisecond); err == nil {
				t.Error("Remove of a group with a live process succeeded")
			}
			if n, err := g.Kill(time.Second, func(int) bool { return false }); err != nil || n != 0 {
				t.Fatalf("Kill sparing everything = %d, %v", n, err)
			}
			if err := unix.Kill(cmd.Process.Pid, 0); err != nil {
				t.Fatalf("Kill killed a process owned returned false for: %v", err)
			}
			if _, err := g.Kill(2*time.Second, func(pid int) bool { return pid == cmd.Process.Pid }); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if err := g.Remove(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			for _, d := range g.Dirs() {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left after Remove: %v", d, err)
				}
			}
		})
	}
}

// BenchmarkHostCreateRemove is a container's cgroup work without a
// process: Create with a memory and pids limit, Remove; beside it the
// bare mkdir and rmdir of the same directories (the kernel's share).
func BenchmarkHostCreateRemove(b *testing.B) {
	if os.Getenv("BERTH_TEST_ROOT") != "1" || os.Geteuid() != 0 {
		b.Skip("needs root and BERTH_TEST_ROOT=1: creates cgroups")
	}
	l, err := DetectHost()
	if err != nil {
		b.Fatal(err)
	}
	parent := "berth-cgbench-" + strconv.Itoa(os.Getpid())
	defer func() {
		p, _ := l.Open(parent)
		_ = p.Remove(time.Second)
	}()
	g, _ := l.Open(parent + "/1")
	lim := Limits{MemoryBytes: 64 << 20, Pids: 100}
	b.Run("Create+Remove", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := g.Create(lim); err != nil {
				b.Fatal(err)
			}
			if err := g.Remove(time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mkdir+rmdir", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, d := range g.Dirs() {
				if err := unix.Mkdir(d, 0o755); err != nil {
					b.Fatal(err)
				}
			}
			for _, d := range g.Dirs() {
				if err := unix.Rmdir(d); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// TestHostLegacyFreezer checks a group that an earlier berth version froze
// through the v1 freezer, on a host with a unified hierarchy (where the
// freezer is now v2's): it reads as frozen, thawing thaws it there too,
// and removing the group removes its v1 freezer directory.
func TestHostLegacyFreezer(t *testing.T) {
	l := hostLayout(t)
	v1, ok := l.V1["freezer"]
	if !ok || l.Unified == "" {
		t.Skip("not a hybrid host with a v1 freezer: nothing legacy to handle")
	}
	name := "berth-cglegacy-" + strconv.Itoa(os.Getpid())
	g, err := l.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Remove(time.Second); _ = os.Remove(filepath.Join(v1, name)) })
	if err := g.Create(Limits{}); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(v1, name)
	if err := os.Mkdir(old, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "freezer.state"), []byte("FROZEN"), 0); err != nil {
		t.Fatal(err)
	}
	if fz, err := g.Frozen(); err != nil || !fz {
		t.Fatalf("Frozen() = %v, %v; want true (frozen through v1)", fz, err)
	}
	if err := g.Freeze(false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(old, "freezer.state")); strings.TrimSpace(string(b)) != "THAWED" {
		t.Errorf("v1 freezer.state %q after thaw, want THAWED", b)
	}
	if fz, err := g.Frozen(); err != nil || fz {
		t.Errorf("Frozen() = %v, %v after thaw; want false", fz, err)
	}
	if err := g.Remove(time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("v1 freezer directory still there after Remove: %v", err)
	}
}
