package ksm

import "testing"

// The parsers read files written by the kernel, but berth may run on a
// future kernel or a fake tree: they must never panic and must keep their
// invariants.

func FuzzParseProcStat(f *testing.F) {
	f.Add("ksm_rmap_items 8192\nksm_zero_pages 0\nksm_merging_pages 4096\nksm_process_profit -5\nksm_merge_any: no\nksm_mergeable: yes\n")
	f.Add("ksm_merge_any: maybe")
	f.Fuzz(func(t *testing.T, text string) {
		_, _ = ParseProcStat(text)
	})
}

func FuzzParseMeminfo(f *testing.F) {
	f.Add("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 500 kB\n")
	f.Add("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 1 kB\nCached: 2000 kB\n")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := ParseMeminfo(text)
		if err == nil && m.Available > m.Total {
			t.Fatalf("available %d above total %d", m.Available, m.Total)
		}
	})
}

func FuzzParseCPUTime(f *testing.F) {
	f.Add("37 (ksmd) S 2 0 0 0 -1 2129984 0 0 0 0 0 1234 0 0 25 5 1 0 6 0")
	f.Add("5 (a) b) R 1")
	f.Fuzz(func(t *testing.T, text string) {
		d, err := ParseCPUTime(text)
		if err == nil && d < 0 {
			t.Fatalf("negative CPU time %v", d)
		}
	})
}

func FuzzDecide(f *testing.F) {
	f.Add(uint64(16<<30), uint64(1<<30), uint64(0), 1, uint64(100), uint64(5), uint64(500), uint64(3), 20, 64, 1250)
	f.Fuzz(func(t *testing.T, total, avail, committed uint64, run int, npages, sharing, scans, prevSharing uint64, coef, lo, hi int) {
		c := DefaultConfig()
		c.ThresCoef, c.NpagesMin, c.NpagesMax = coef, lo, hi
		if ValidateConfig(c) != nil {
			return
		}
		s := Sample{Mem: Meminfo{Total: total, Available: min(avail, total)}, Committed: committed,
			KSM: Counters{Run: run % 3, PagesToScan: npages, PagesSharing: sharing, FullScans: scans}}
		d := Decide(c, s, State{Started: true, Npages: npages, Sharing: prevSharing, Tracking: true})
		if d.PagesToScan != 0 && (d.PagesToScan < uint64(c.NpagesMin) || d.PagesToScan > uint64(c.NpagesMax)) {
			t.Fatalf("pages_to_scan %d outside [%d, %d]", d.PagesToScan, c.NpagesMin, c.NpagesMax)
		}
		if d.Run != -1 && d.Run != RunStop && d.Run != RunMerge {
			t.Fatalf("run %d", d.Run)
		}
	})
}
