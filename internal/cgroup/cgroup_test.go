package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	if got, want := l.Describe(), "memory=v1 pids=v1 cpu=v1 cpuset=v1 freezer=v1"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	g, err := l.Open("berth/101")
	if err != nil {
		t.Fatal(err)
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
