package ksm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseProcStat(t *testing.T) {
	// Linux 6.18's /proc/PID/ksm_stat for a process with merged pages.
	text := "ksm_rmap_items 8192\nksm_zero_pages 0\nksm_merging_pages 4096\nksm_process_profit 16318464\nksm_merge_any: no\nksm_mergeable: yes\n"
	got, err := ParseProcStat(text)
	if err != nil {
		t.Fatal(err)
	}
	want := ProcStat{RmapItems: 8192, MergingPages: 4096, Profit: 16318464, Mergeable: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	// A negative profit (metadata outweighs savings) and future lines.
	got, err = ParseProcStat("ksm_process_profit -1024\nksm_new_counter 7\nksm_merge_any: yes\n")
	if err != nil || got.Profit != -1024 || !got.MergeAny {
		t.Errorf("got %+v, %v", got, err)
	}
	for _, bad := range []string{"ksm_merging_pages x\n", "ksm_merge_any: maybe\n", "ksm_rmap_items -1\n"} {
		if _, err := ParseProcStat(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseMeminfo(t *testing.T) {
	text := "MemTotal:       24606852 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\nBuffers:           10000 kB\nCached:          1000000 kB\n"
	got, err := ParseMeminfo(text)
	if err != nil {
		t.Fatal(err)
	}
	want := Meminfo{Total: 24606852 * 1024, Free: 20000000 * 1024, Available: 22000000 * 1024, Buffers: 10000 * 1024, Cached: 1000000 * 1024}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	old, err := ParseMeminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 20 kB\n")
	if err != nil || old.Available != 130*1024 {
		t.Errorf("pre-3.14 kernel: got %+v, %v, want available from free+buffers+cached", old, err)
	}
	for _, bad := range []string{"", "MemTotal: x kB\nMemFree: 1 kB\n", "MemFree: 1 kB\n", "MemTotal:\nMemFree: 1 kB\n"} {
		if _, err := ParseMeminfo(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseCPUTime(t *testing.T) {
	// ksmd on Linux 6.18: utime 0, stime 1234 ticks.
	text := "37 (ksmd) S 2 0 0 0 -1 2129984 0 0 0 0 0 1234 0 0 25 5 1 0 6 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	got, err := ParseCPUTime(text)
	if err != nil || got != 12340*time.Millisecond {
		t.Errorf("got %v, %v, want 12.34s", got, err)
	}
	got, err = ParseCPUTime("5 (a) b) (c) R 1 1 1 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0")
	if err != nil || got != 100*time.Millisecond {
		t.Errorf("name with parentheses: got %v, %v", got, err)
	}
	for _, bad := range []string{"", "37 ksmd S", "37 (ksmd) S 2 0", "37 (ksmd) S 2 0 0 0 -1 0 0 0 0 0 x 0"} {
		if _, err := ParseCPUTime(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// fakeSysfs writes a KSM sysfs tree with the given files.
func fakeSysfs(t *testing.T, files map[string]string) Sysfs {
	t.Helper()
	dir := t.TempDir()
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Sysfs{Dir: dir}
}

func ksmFiles() map[string]string {
	return map[string]string{"run": "0", "pages_shared": "10", "pages_sharing": "90", "pages_unshared": "5",
		"pages_volatile": "3", "full_scans": "7", "pages_to_scan": "100", "sleep_millisecs": "20", "general_profit": "-4096"}
}

func TestSysfs(t *testing.T) {
	s := fakeSysfs(t, ksmFiles())
	c, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	p := int64(-4096)
	want := Counters{Run: 0, PagesShared: 10, PagesSharing: 90, PagesUnshared: 5, PagesVolatile: 3, FullScans: 7, PagesToScan: 100, SleepMillisecs: 20, GeneralProfit: &p}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if err := s.SetSpeed(1250, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRun(t.Context(), RunMerge); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRun(t.Context(), 3); err == nil {
		t.Error("run=3 accepted")
	}
	c, _ = s.Read()
	if c.Run != 1 || c.PagesToScan != 1250 || c.SleepMillisecs != 10 {
		t.Errorf("after writes: %+v", c)
	}
	// Kernels before 6.1 have no general_profit.
	os.Remove(filepath.Join(s.Dir, "general_profit"))
	if c, err := s.Read(); err != nil || c.GeneralProfit != nil {
		t.Errorf("without general_profit: %+v, %v", c, err)
	}
	os.WriteFile(filepath.Join(s.Dir, "full_scans"), []byte("lots\n"), 0o644)
	if _, err := s.Read(); err == nil || !strings.Contains(err.Error(), "full_scans") {
		t.Errorf("bad counter: %v", err)
	}
	none := Sysfs{Dir: filepath.Join(t.TempDir(), "missing")}
	if _, err := none.Read(); err != ErrUnsupported {
		t.Errorf("missing dir: %v, want ErrUnsupported", err)
	}
}
