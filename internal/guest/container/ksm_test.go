package container_test

import (
	"archive/tar"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest/container/cttest"
	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/ksm/ksmtest"
)

// buildKSMWork builds testdata/ksmwork as a static binary (it must run in a
// busybox root without a C library).
func buildKSMWork(t *testing.T) []byte {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
			t.Fatalf("no go tool to build the KSM workload: %v", err)
		}
	}
	out := filepath.Join(t.TempDir(), "ksmwork")
	cmd := exec.Command(goTool, "build", "-o", out, ".")
	cmd.Dir = "testdata/ksmwork"
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the KSM workload: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKSMChoice runs identical workloads as the init of four containers
// on this host's real KSM: ksm=0 with a workload that madvises its memory
// MADV_MERGEABLE (as QEMU does) never gets a page scanned or merged, while
// the same workload in a default container merges; ksm=1 makes even an
// unmarked workload merge (PR_SET_MEMORY_MERGE on init, inherited), which a
// default container leaves alone. Commands exec'd into the ksm=0 container
// carry the no-merge filter too.
func TestKSMChoice(t *testing.T) {
	e := newEnv(t)
	es, err := cttest.BusyboxEntries()
	if err != nil {
		t.Fatal(err)
	}
	es = append(es, imagetest.Entry{Name: "ksmwork", Body: string(buildKSMWork(t)), Type: tar.TypeReg, Mode: 0o755})
	tarPath := filepath.Join(t.TempDir(), "bbksm.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := imagetest.WriteTar(f, es); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ctx := context.Background()
	if _, err := e.img.Import(ctx, "bbksm", tarPath, cttest.Logger{T: t}); err != nil {
		t.Fatal(err)
	}

	sys := ksmtest.Host(t)

	const mib = 16
	pages := uint64(mib << 20 / os.Getpagesize())
	cases := []struct {
		id        int
		name      string
		cfg       map[string]string
		mark      string
		wantMerge bool
		wantAny   bool
		wantLog   string
	}{
		{131, "ksm=0, madvise", map[string]string{"ksm": "0"}, "madvise", false, false, "madvise(MADV_MERGEABLE): invalid argument"},
		{132, "default, madvise", nil, "madvise", true, false, "madvise(MADV_MERGEABLE): <nil>"},
		{133, "ksm=1, unmarked", map[string]string{"ksm": "1"}, "plain", true, true, "ready"},
		{134, "default, unmarked", nil, "plain", false, false, "ready"},
	}
	pids := map[int]int{}
	gs := map[int]api.Guest{}
	for _, c := range cases {
		cfg := map[string]string{"image": "bbksm", "init": "/ksmwork " + c.mark + " " + strconv.Itoa(mib), "memory": "64"}
		for k, v := range c.cfg {
			cfg[k] = v
		}
		g := e.create(c.id, cfg)
		e.start(g)
		st, err := e.d.Status(ctx, g)
		if err != nil || st.PID == 0 {
			t.Fatalf("%s: status %+v, %v", c.name, st, err)
		}
		pids[c.id], gs[c.id] = st.PID, g
	}
	proc := ksm.Proc("")
	logOf := func(id int) string {
		b, _ := os.ReadFile(filepath.Join(e.dir, "containers", strconv.Itoa(id), "console.log"))
		return string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range cases {
		for !strings.Contains(logOf(c.id), "ksmwork: ready") {
			if time.Now().After(deadline) {
				t.Fatalf("%s: workload not ready; console: %q", c.name, logOf(c.id))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(logOf(c.id), c.wantLog) {
			t.Errorf("%s: console %q lacks %q", c.name, logOf(c.id), c.wantLog)
		}
	}

	// Merge fast until the mergeable ones are merged and ksmd has gone
	// over everything at least twice more.
	c0 := ksmtest.MergeFast(t, sys)
	deadline = time.Now().Add(90 * time.Second)
	for {
		c, err := sys.Read()
		if err != nil {
			t.Fatal(err)
		}
		done := c.FullScans >= c0.FullScans+3
		for _, cs := range cases {
			if st, err := proc.Stat(pids[cs.id]); cs.wantMerge && (err != nil || st.MergingPages < pages*9/10) {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("KSM did not merge the mergeable workloads within 90 s (full scans %d → %d)", c0.FullScans, c.FullScans)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, c := range cases {
		st, err := proc.Stat(pids[c.id])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: rmap items %d, merged %d of %d, merge-any %v", c.name, st.RmapItems, st.MergingPages, pages, st.MergeAny)
		if c.wantMerge && st.MergingPages < pages*9/10 {
			t.Errorf("%s: %d of %d pages merged, want at least 90%%", c.name, st.MergingPages, pages)
		}
		if !c.wantMerge && (st.MergingPages != 0 || st.RmapItems != 0) {
			t.Errorf("%s: ksmd scanned %d and merged %d pages, want none", c.name, st.RmapItems, st.MergingPages)
		}
		if st.MergeAny != c.wantAny {
			t.Errorf("%s: whole process mergeable = %v, want %v", c.name, st.MergeAny, c.wantAny)
		}
	}
	// exec'd commands: the no-merge filter in a ksm=0 container, the
	// main filter only elsewhere; merge-any in a ksm=1 one.
	for id, want := range map[int]string{131: "Seccomp_filters:\t2", 132: "Seccomp_filters:\t1"} {
		if out, code := e.run(gs[id], "grep Seccomp_filters /proc/self/status"); code != 0 || !strings.Contains(out, want) {
			t.Errorf("exec in container %d: %q (exit %d), want %q", id, out, code, want)
		}
	}
	if out, code := e.run(gs[133], "grep ksm_merge_any /proc/self/ksm_stat"); code != 0 || !strings.Contains(out, "yes") {
		t.Errorf("exec in the ksm=1 container: %q (exit %d), want ksm_merge_any yes", out, code)
	}
}
