package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/ksm/ksmtest"
	"github.com/berthhq/berth/internal/vmtest"
)

// TestKSMMemMerge starts three small diskless TCG VMs (SeaBIOS finds
// nothing to boot and waits) on this host's real KSM: a default one, one
// with ksm=0 and a default one started while the node disallows merging.
// Only the first has its RAM marked mergeable (VmFlags "mg" in smaps) and
// gets pages merged; ksmd never scans a page of the other two.
func TestKSMMemMerge(t *testing.T) {
	if ok, why := vmtest.Root(); !ok {
		t.Skip(why)
	}
	sys := ksmtest.Host(t)
	dir := t.TempDir()
	defer vmtest.KillUnder(dir)
	ctx := context.Background()
	allowed := New(filepath.Join(dir, "vms"), nil)
	denied := New(filepath.Join(dir, "vms"), nil)
	denied.KSMAllowed = func(context.Context) bool { return false }

	cases := []struct {
		name      string
		d         *Driver
		g         api.Guest
		wantMerge bool
	}{
		{"default", allowed, api.Guest{ID: 4301, Kind: api.GuestVM, Config: map[string]string{"memory": "32"}}, true},
		{"ksm=0", allowed, api.Guest{ID: 4302, Kind: api.GuestVM, Config: map[string]string{"memory": "32", "ksm": "0"}}, false},
		{"node disallows", denied, api.Guest{ID: 4303, Kind: api.GuestVM, Config: map[string]string{"memory": "32"}}, false},
	}
	pids := map[int]int{}
	for _, c := range cases {
		if errs := c.d.Validate(c.g); errs != nil {
			t.Fatalf("%s: %v", c.name, errs)
		}
		if err := c.d.Create(ctx, c.g, tlog{t}); err != nil {
			t.Fatal(err)
		}
		if err := c.d.Start(ctx, c.g, tlog{t}); err != nil {
			t.Fatal(err)
		}
		defer c.d.Destroy(context.Background(), c.g, tlog{t})
		defer c.d.Stop(context.Background(), c.g, tlog{t})
		st, err := c.d.Status(ctx, c.g)
		if err != nil || st.PID == 0 {
			t.Fatalf("%s: status %+v, %v", c.name, st, err)
		}
		pids[c.g.ID] = st.PID
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/cmdline")
		want := map[bool]string{true: "mem-merge=on", false: "mem-merge=off"}[c.wantMerge]
		if !strings.Contains(string(cmdline), want) {
			t.Errorf("%s: QEMU runs without %s: %q", c.name, want, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
		if got := mergeableKiB(t, st.PID); (got >= 32<<10) != c.wantMerge {
			t.Errorf("%s: %d KiB of QEMU's mappings are marked mergeable; want the 32 MiB of guest RAM to be so: %v", c.name, got, c.wantMerge)
		}
	}

	c0 := ksmtest.MergeFast(t, sys)
	proc := ksm.Proc("")
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := sys.Read()
		if err != nil {
			t.Fatal(err)
		}
		st, err := proc.Stat(pids[4301])
		if err != nil {
			t.Fatal(err)
		}
		if c.FullScans >= c0.FullScans+3 && st.MergingPages > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page of the default VM merged in 90 s (full scans %d → %d, its ksm_stat %+v)", c0.FullScans, c.FullScans, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, c := range cases {
		st, err := proc.Stat(pids[c.g.ID])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: rmap items %d, merged pages %d", c.name, st.RmapItems, st.MergingPages)
		if !c.wantMerge && (st.RmapItems != 0 || st.MergingPages != 0) {
			t.Errorf("%s: ksmd scanned %d and merged %d pages, want none", c.name, st.RmapItems, st.MergingPages)
		}
	}
}

// mergeableKiB sums the sizes of pid's mappings marked mergeable ("mg" in
// VmFlags of /proc/PID/smaps).
func mergeableKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		t.Fatal(err)
	}
	total, size := 0, 0
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "Size:":
			size, _ = strconv.Atoi(f[1])
		case len(f) > 0 && f[0] == "VmFlags:":
			for _, fl := range f[1:] {
				if fl == "mg" {
					total += size
				}
			}
		}
	}
	return total
}
