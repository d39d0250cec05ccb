// Command ksmbench compares berth's KSM tuner with Debian's ksmtuned on the
// host's real KSM, in one run: how soon each gets a workload of N processes
// with identical pages to 90% of the possible merging, and how much CPU
// ksmd spends on the way and over a fixed window.
//
// Each round resets KSM (unmerge, kernel default speed, stopped), starts N
// workload processes (berth's hidden `__ksm-workload`, or this binary
// re-executed) that each map M MiB of pages identical across processes and
// madvise(MADV_MERGEABLE) them as QEMU does, then starts one tuner and
// samples every 100 ms for -window: the workloads' merged pages
// (/proc/PID/ksm_merging_pages) and ksmd's CPU time (/proc/<ksmd>/stat).
// Rounds alternate between the two tuners.
//
// Fairness: both tuners only act when they judge memory short, and this
// host has plenty free, so both get the same threshold, -thres-coef percent
// of memory (ksmtuned through KSM_THRES_COEF in its environment; berth
// through its thres-coef setting). Everything else is each tuner's default:
// ksmtuned's 60 s monitor interval, boost 300, max 1250; berth's 10 s
// interval (2 s while ramping up), doubling while memory is short or merging progresses, max
// 10000, 50% CPU cap, slowing down once merging has converged.
// berth's tuner runs in-process: the same internal/ksm Service the daemon
// runs, on a temporary store. ksmtuned runs as /usr/sbin/ksmtuned with its
// pid file and debug log in a temporary directory and is killed (its
// process group) at the end of its round.
//
// It needs root, KSM, the ksmtuned package (deps/ksm.debs) and no other
// ksmtuned running; it holds the host-wide KSM lock of internal/ksm/ksmtest
// and restores run, pages_to_scan and sleep_millisecs when done.
//
// Usage:
//
//	go run ./tools/ksmbench [-procs 8] [-mib 256] [-window 300s] [-rounds 2] [-thres-coef 99] [-json] [-keep-logs] [-tuners berth,ksmtuned]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/ksm/ksmtest"
	"github.com/berthhq/berth/internal/store"
)

// ksmtunedPath is Debian's ksmtuned script.
const ksmtunedPath = "/usr/sbin/ksmtuned"

type result struct {
	Tuner string `json:"tuner"`
	Round int    `json:"round"`
	// T90 is when the workloads reached 90% of the possible merged pages
	// (0 if never within the window).
	T90 time.Duration `json:"t90_ns"`
	// CPU90 is ksmd's CPU time until then; CPUWindow over the window.
	CPU90     time.Duration `json:"cpu90_ns"`
	CPUWindow time.Duration `json:"cpu_window_ns"`
	// Merged is the workloads' merged pages at the end, Possible the
	// most there can be (every page of every process).
	Merged   uint64 `json:"merged_pages"`
	Possible uint64 `json:"possible_pages"`
	// Sharing is pages_sharing at the end: pages saved.
	Sharing   uint64 `json:"pages_sharing"`
	Decisions int    `json:"decisions"`
	// Scans90 and ScansWindow are the full scans ksmd completed until T90
	// and over the window; Scanned90 and ScannedWindow the pages it
	// scanned (/sys/kernel/mm/ksm/pages_scanned, Linux 6.8+; 0 when
	// absent): the work behind the CPU figures.
	Scans90       uint64 `json:"full_scans90"`
	ScansWindow   uint64 `json:"full_scans_window"`
	Scanned90     uint64 `json:"pages_scanned90"`
	ScannedWindow uint64 `json:"pages_scanned_window"`
	// Foreign is the most pages of other processes ksmd had to scan
	// during the round (their ksm_rmap_items): mergeable memory of other
	// programs on a shared host costs ksmd CPU that neither tuner causes.
	Foreign uint64 `json:"foreign_rmap_items"`
	// Load is the host's 1-minute load average at the end of the round:
	// other work competes with ksmd (which runs at nice 5) for the CPUs.
	Load string `json:"load"`
}

func main() {
	procs := flag.Int("procs", 8, "workload processes")
	mib := flag.Int("mib", 256, "MiB of identical pages per process")
	window := flag.Duration("window", 300*time.Second, "how long each tuner runs per round")
	rounds := flag.Int("rounds", 2, "rounds per tuner (alternating)")
	coef := flag.Int("thres-coef", 99, "memory threshold in percent given to both tuners")
	asJSON := flag.Bool("json", false, "print JSON instead of Markdown")
	tunerList := flag.String("tuners", "berth,ksmtuned", "tuners to run, in this order each round")
	flag.BoolVar(&keepLogs, "keep-logs", false, "keep each tuner's decision log and print where")
	flag.Parse()
	// On SIGINT/SIGTERM the round stops its tuner and workloads and the
	// host's KSM settings are restored before exiting.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	tuners = strings.Split(*tunerList, ",")
	if err := run(ctx, *procs, *mib, *window, *rounds, *coef, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "ksmbench:", err)
		os.Exit(2)
	}
}

func init() { ksmtest.MaybeRun() }

var (
	keepLogs bool
	tuners   []string
)

// cleanup removes a round's temporary directory unless -keep-logs.
func cleanup(dir string) {
	if keepLogs {
		fmt.Fprintln(os.Stderr, "ksmbench: tuner log kept in", dir)
		return
	}
	os.RemoveAll(dir)
}

func run(ctx context.Context, procs, mib int, window time.Duration, rounds, coef int, asJSON bool) error {
	sys := ksm.SysfsUnder("")
	if os.Geteuid() != 0 {
		return errors.New("needs root: it changes the host's KSM settings")
	}
	if !sys.Supported() {
		return ksm.ErrUnsupported
	}
	if _, err := os.Stat(ksmtunedPath); err != nil {
		return fmt.Errorf("%s: %w (install the ksmtuned package: make deps)", ksmtunedPath, err)
	}
	if err := checkKsmtunedConf(); err != nil {
		return err
	}
	unlock, err := ksmtest.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if pid, name := ksmtest.ForeignTuner(); pid != 0 {
		return fmt.Errorf("%s (pid %d) already runs and would fight the benchmark: systemctl disable --now ksmtuned", name, pid)
	}
	restore, err := ksmtest.Save(sys.Dir)
	if err != nil {
		return err
	}
	defer func() {
		if err := restore(); err != nil {
			fmt.Fprintln(os.Stderr, "ksmbench:", err)
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "ksmbench: %d processes x %d MiB, window %s, threshold %d%% for both tuners\n", procs, mib, window, coef)
	var results []result
	for r := 1; r <= rounds; r++ {
		for _, tuner := range tuners {
			res, err := round(ctx, tuner, r, procs, mib, window, coef, exe)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", tuner, r, err)
			}
			fmt.Fprintf(os.Stderr, "ksmbench: %s round %d: t90 %s, ksmd CPU %s to t90, %s in window, merged %d/%d\n",
				tuner, r, dur(res.T90), res.CPU90, res.CPUWindow, res.Merged, res.Possible)
			results = append(results, res)
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	report(os.Stdout, results)
	return nil
}

// checkKsmtunedConf refuses to run when /etc/ksmtuned.conf sets a value
// that would make ksmtuned ignore the benchmark's environment.
func checkKsmtunedConf() error {
	b, err := os.ReadFile("/etc/ksmtuned.conf")
	if err != nil {
		return nil
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "KSM_") {
			return fmt.Errorf("/etc/ksmtuned.conf sets %q: comment it out so that ksmtuned runs with its defaults", line)
		}
	}
	return nil
}

// reset unmerges everything and puts KSM back to the kernel's defaults,
// stopped.
func reset(ctx context.Context, sys ksm.Sysfs) error {
	if err := sys.SetRun(ctx, ksm.RunUnmerge); err != nil {
		return err
	}
	if err := sys.SetSpeed(100, 20); err != nil {
		return err
	}
	return sys.SetRun(ctx, ksm.RunStop)
}

func round(ctx context.Context, tuner string, n, procs, mib int, window time.Duration, coef int, exe string) (result, error) {
	sys := ksm.SysfsUnder("")
	proc := ksm.Proc("")
	res := result{Tuner: tuner, Round: n}
	if err := reset(ctx, sys); err != nil {
		return res, err
	}
	var ws []*ksmtest.Process
	defer func() {
		for _, w := range ws {
			w.Stop()
		}
		reset(context.WithoutCancel(ctx), sys)
	}()
	for range procs {
		w, err := ksmtest.Start(ctx, ksmtest.Spec{MiB: mib, Seed: 42, Mark: ksmtest.MarkMadvise}, exe)
		if err != nil {
			return res, err
		}
		ws = append(ws, w)
	}
	res.Possible = uint64(procs * ws[0].Spec.Pages())
	ksmd, err := proc.KsmdPID()
	if err != nil {
		return res, err
	}
	cpu0, err := proc.CPUTime(ksmd)
	if err != nil {
		return res, err
	}
	scans0, scanned0 := progress(sys)
	mine := map[int]bool{}
	for _, w := range ws {
		mine[w.PID()] = true
	}
	res.Foreign = foreign(proc, mine)

	stop, decisions, err := startTuner(tuner, coef)
	if err != nil {
		return res, err
	}
	start := time.Now()
	for time.Since(start) < window {
		select {
		case <-ctx.Done():
			stop()
			decisions()
			return res, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if res.T90 != 0 {
			continue
		}
		var merged uint64
		for _, w := range ws {
			st, err := proc.Stat(w.PID())
			if err != nil {
				stop()
				return res, err
			}
			merged += st.MergingPages
		}
		if merged*10 >= res.Possible*9 {
			res.T90 = time.Since(start)
			cpu, _ := proc.CPUTime(ksmd)
			res.CPU90 = cpu - cpu0
			scans, scanned := progress(sys)
			res.Scans90, res.Scanned90 = scans-scans0, scanned-scanned0
			res.Foreign = max(res.Foreign, foreign(proc, mine))
		}
	}
	cpu, _ := proc.CPUTime(ksmd)
	res.CPUWindow = cpu - cpu0
	scans, scanned := progress(sys)
	res.ScansWindow, res.ScannedWindow = scans-scans0, scanned-scanned0
	res.Foreign = max(res.Foreign, foreign(proc, mine))
	for _, w := range ws {
		if st, err := proc.Stat(w.PID()); err == nil {
			res.Merged += st.MergingPages
		}
	}
	c, _ := sys.Read()
	res.Sharing = c.PagesSharing
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Load = strings.Fields(string(b))[0]
	}
	stop()
	res.Decisions = decisions()
	return res, nil
}

// progress returns ksmd's full scans and scanned pages so far (pages 0
// when the kernel does not count them).
func progress(sys ksm.Sysfs) (scans, scanned uint64) {
	c, _ := sys.Read()
	b, _ := os.ReadFile(filepath.Join(sys.Dir, "pages_scanned"))
	scanned, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return c.FullScans, scanned
}

// foreign sums the KSM rmap items (pages ksmd scans) of processes other
// than the round's workloads.
func foreign(proc ksm.Proc, mine map[int]bool) uint64 {
	all, _ := proc.Merging()
	var n uint64
	for pid, st := range all {
		if !mine[pid] {
			n += st.RmapItems
		}
	}
	return n
}

// startTuner starts one tuner and returns its stop function and a counter
// of the decisions that changed KSM settings.
func startTuner(tuner string, coef int) (stop func(), decisions func() int, err error) {
	dir, err := os.MkdirTemp("", "ksmbench-")
	if err != nil {
		return nil, nil, err
	}
	if n, ok := strings.CutPrefix(tuner, "fixed:"); ok {
		// A fixed speed set once, for experiments: how the speed alone
		// changes the time and the CPU needed.
		pages, err := strconv.ParseUint(n, 10, 64)
		if err != nil || pages == 0 {
			return nil, nil, fmt.Errorf("tuner %q: want fixed:PAGES_TO_SCAN", tuner)
		}
		sys := ksm.SysfsUnder("")
		if err := sys.SetSpeed(pages, 10); err != nil {
			return nil, nil, err
		}
		if err := sys.SetRun(context.Background(), ksm.RunMerge); err != nil {
			return nil, nil, err
		}
		return func() {}, func() int { cleanup(dir); return 1 }, nil
	}
	switch tuner {
	case "berth":
		st, err := store.Open(filepath.Join(dir, "berth.db"))
		if err != nil {
			return nil, nil, err
		}
		logf, err := os.Create(filepath.Join(dir, "tuner.log"))
		if err != nil {
			return nil, nil, err
		}
		svc := ksm.New(ksm.Options{Sysfs: ksm.SysfsUnder(""), Store: st, Log: slog.New(slog.NewTextHandler(logf, nil))})
		if _, err := svc.SetConfig(context.Background(), api.KSMConfigUpdate{ThresCoef: &coef}); err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { svc.Run(ctx); close(done) }()
		return func() {
				cancel()
				<-done
				st.Close()
				logf.Close()
			}, func() int {
				defer cleanup(dir)
				return countLines(filepath.Join(dir, "tuner.log"), "msg=\"KSM tuner\"")
			}, nil
	case "ksmtuned":
		cmd := exec.Command(ksmtunedPath)
		cmd.Env = append(os.Environ(), "KSM_THRES_COEF="+strconv.Itoa(coef), "PIDFILE="+filepath.Join(dir, "ksmtuned.pid"),
			"DEBUG=1", "LOGFILE="+filepath.Join(dir, "ksmtuned.log"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Run(); err != nil { // forks its loop and exits
			return nil, nil, fmt.Errorf("start ksmtuned: %w", err)
		}
		pgid := cmd.Process.Pid
		return func() {
				syscall.Kill(-pgid, syscall.SIGTERM)
				time.Sleep(200 * time.Millisecond)
				syscall.Kill(-pgid, syscall.SIGKILL)
			}, func() int {
				defer cleanup(dir)
				return countLines(filepath.Join(dir, "ksmtuned.log"), "KSMCTL start") + countLines(filepath.Join(dir, "ksmtuned.log"), "stop ksm")
			}, nil
	}
	return nil, nil, fmt.Errorf("unknown tuner %q", tuner)
}

func countLines(path, sub string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), sub)
}

func dur(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return d.Round(100 * time.Millisecond).String()
}

// mega prints a page count in millions.
func mega(n uint64) string { return fmt.Sprintf("%.2fM", float64(n)/1e6) }

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	if len(ds)%2 == 0 {
		return ds[len(ds)/2-1]/2 + ds[len(ds)/2]/2
	}
	return ds[len(ds)/2]
}

func report(w io.Writer, rs []result) {
	fmt.Fprintln(w, "| tuner | round | time to 90% | ksmd CPU to 90% | ksmd CPU in window | full scans to 90% / in window | pages scanned to 90% / in window | merged pages at end | pages_sharing | foreign mergeable pages | setting changes | load avg |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	med := map[string][3][]time.Duration{}
	shares := map[string]uint64{}
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %d / %d | %s / %s | %d of %d | %d | %d | %d | %s |\n", r.Tuner, r.Round, dur(r.T90),
			r.CPU90.Round(10*time.Millisecond), r.CPUWindow.Round(10*time.Millisecond), r.Scans90, r.ScansWindow, mega(r.Scanned90), mega(r.ScannedWindow),
			r.Merged, r.Possible, r.Sharing, r.Foreign, r.Decisions, r.Load)
		m := med[r.Tuner]
		t90 := r.T90
		if t90 == 0 {
			t90 = time.Duration(1<<62 - 1)
		}
		m[0], m[1], m[2] = append(m[0], t90), append(m[1], r.CPU90), append(m[2], r.CPUWindow)
		med[r.Tuner] = m
		shares[r.Tuner] = max(shares[r.Tuner], r.Merged)
	}
	b, k := med["berth"], med["ksmtuned"]
	ratio := func(a, b time.Duration) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", float64(a)/float64(b))
	}
	never := time.Duration(1<<62 - 1)
	t90 := ratio(median(b[0]), median(k[0]))
	cpu90 := ratio(median(b[1]), median(k[1]))
	if slices.Contains(b[0], never) || slices.Contains(k[0], never) {
		t90, cpu90 = "- (a tuner never reached 90% within the window: lengthen -window)", "-"
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "berth/ksmtuned (medians): time to 90%% %s, ksmd CPU to 90%% %s, ksmd CPU in window %s; merged pages at end %d vs %d\n",
		t90, cpu90, ratio(median(b[2]), median(k[2])), shares["berth"], shares["ksmtuned"])
}
