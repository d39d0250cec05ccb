// Command ctbench is `make bench-ct`: berth's system containers beside
// Debian's LXC on the same busybox root file system, in one run.
//
//   - start latency: start request → a command ran inside → hard stop,
//     median of -n cycles per side, the two sides taking turns cycle by
//     cycle; berth through its API (start task, exec over the API, stop
//     task), LXC as lxc-start -d + lxc-attach + lxc-stop -k;
//   - density: -density idle containers started through the API; host
//     memory used per container beyond the containers' own processes
//     (drop of MemAvailable minus the processes' summed PSS), and the
//     berth daemon's own RSS growth;
//   - stopall of those containers (clean shutdowns in parallel).
//
// The timed cycles run on a daemon at the default log level; a separate
// run of -phases cycles on a daemon at debug level gives the driver's
// per-phase medians first.
//
// It needs root and a built berth binary (-berth).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
	"github.com/berthhq/berth/internal/guest/container/cttest"
)

func main() {
	berth := flag.String("berth", "bin/berth", "berth binary")
	n := flag.Int("n", 50, "start/stop cycles per side")
	density := flag.Int("density", 500, "idle containers for the density and stopall measurements (0 skips)")
	skipLXC := flag.Bool("no-lxc", false, "skip the LXC side")
	phases := flag.Int("phases", 20, "cycles of a separate run at debug level for the per-phase breakdown (0 skips)")
	flag.Parse()
	if os.Geteuid() != 0 {
		log.Fatal("ctbench needs root (namespaces, cgroups, mounts)")
	}
	bin, err := filepath.Abs(*berth)
	if err != nil {
		log.Fatal(err)
	}
	tmp, err := os.MkdirTemp("", "ctbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o711)
	data := filepath.Join(tmp, "data")
	ctx := context.Background()

	// The per-phase breakdown comes from a daemon logging at debug level
	// (the driver's phase lines of guest 1000), in cycles of its own: the
	// timed cycles run on a daemon at the default level, without that
	// instrumentation.
	d := startDaemon(bin, data, "debug")
	tarPath, err := cttest.WriteBusyboxTar(tmp)
	if err != nil {
		log.Fatal(err)
	}
	must(task(ctx, d.cl, "POST", "/api/v1/images", api.ImageImport{Name: "bb", Source: tarPath}))
	rootfs := filepath.Join(data, "images", "bb", "rootfs")
	must(task(ctx, d.cl, "POST", "/api/v1/guests", api.Guest{ID: 1000, Kind: api.GuestContainer, Config: map[string]string{"image": "bb"}}))
	if *phases > 0 {
		var steps [3][]time.Duration
		median(*phases, func() error { return berthCycle(ctx, d.cl, 1000, &steps) })
		time.Sleep(100 * time.Millisecond) // the last lines of the daemon's log
		fmt.Printf("where berth's time goes (separate %d cycles, daemon at debug level): start task %s, exec %s, stop task %s\n",
			*phases, mid(steps[0]), mid(steps[1]), mid(steps[2]))
		d.ph.print()
	}
	d.stop()

	d = startDaemon(bin, data, "info")
	defer d.stop()
	cl := d.cl
	fmt.Printf("start latency (start request -> command ran inside -> hard stop), median of %d cycles per side, taking turns, busybox rootfs %s\n", *n, rootfs)
	// The two sides take turns, cycle by cycle (who goes first
	// alternates), so that both see the same machine: on a shared
	// virtual machine the speed drifts over seconds, and blocks of
	// cycles one after the other measured the drift as much as the
	// difference.
	var steps [3][]time.Duration
	var berthDs, lxcDs []time.Duration
	timed := func(ds *[]time.Duration, cycle func() error) {
		t0 := time.Now()
		must(cycle())
		*ds = append(*ds, time.Since(t0))
	}
	runBerth := func() { timed(&berthDs, func() error { return berthCycle(ctx, cl, 1000, &steps) }) }
	runLXC := func() { timed(&lxcDs, func() error { return lxcCycle(tmp, rootfs) }) }
	if !*skipLXC {
		runLXC() // LXC's first start reads its config and libraries: not timed
		lxcDs = nil
	}
	for i := 0; i < *n; i++ {
		switch {
		case *skipLXC:
			runBerth()
		case i%2 == 0:
			runBerth()
			runLXC()
		default:
			runLXC()
			runBerth()
		}
	}
	berthMed := mid(berthDs)
	fmt.Printf("  berth (unprivileged, idmapped overlay, API): median %s (start task %s, exec %s, stop task %s)\n",
		berthMed, mid(steps[0]), mid(steps[1]), mid(steps[2]))
	if !*skipLXC {
		lxcMed := mid(lxcDs)
		fmt.Printf("  lxc (privileged, lxc-start -d + lxc-attach + lxc-stop -k): median %s\n", lxcMed)
		fmt.Printf("  ratio berth/lxc: %.3f (goal <= 0.2)\n", float64(berthMed)/float64(lxcMed))
	}
	must(task(ctx, cl, "DELETE", "/api/v1/guests/1000", nil))
	floor(*n, rootfs)

	if *density > 0 {
		densityRun(ctx, cl, d.cmd.Process.Pid, *density)
	}
}

// daemon is a berth daemon this benchmark runs, its client and its
// collected phase log (at debug level) or log file (otherwise).
type daemon struct {
	cmd     *exec.Cmd
	cl      *client.Client
	ph      *phaseLog
	logFile string
}

// startDaemon runs berth serve on data, logging JSON at level, and waits
// for its socket. At debug level its log is read as it comes, for the
// phase lines; otherwise it goes to a file that stop scans for warnings
// and errors: this process then spends nothing on the daemon's log while
// it times cycles (a reader woken for every line and decoding it took
// CPU time from the cycles it measured).
func startDaemon(bin, data, level string) *daemon {
	cmd := exec.Command(bin, "serve", "--listen", "none", "--data-dir", data, "--log-level", level, "--log-format", "json")
	d := &daemon{cmd: cmd, ph: &phaseLog{byOp: map[string]map[string][]time.Duration{}}}
	if level == "debug" {
		stderr, err := cmd.StderrPipe()
		if err != nil {
			log.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		go d.ph.read(stderr)
	} else {
		d.logFile = filepath.Join(filepath.Dir(data), "daemon-"+level+".log")
		f, err := os.Create(d.logFile)
		if err != nil {
			log.Fatal(err)
		}
		cmd.Stderr = f
		err = cmd.Start()
		f.Close()
		if err != nil {
			log.Fatal(err)
		}
	}
	sock := filepath.Join(data, "berth.sock")
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i > 300 {
			log.Fatal("daemon did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.cl = client.NewUnix(sock)
	return d
}

// stop ends the daemon (containers keep running: stop them first) and
// prints the warnings and errors of a log that went to a file.
func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(os.Interrupt)
	_ = d.cmd.Wait()
	if d.logFile == "" {
		return
	}
	f, err := os.Open(d.logFile)
	if err != nil {
		return
	}
	defer f.Close()
	d.ph.read(f)
}

// floor measures what the kernel alone needs for the cycle's processes:
// fork, execve and exit of busybox true (from this small process, as
// syscall.ForkExec does it), without and with the fresh namespaces a
// container gets (user with a written id map, mount, PID, UTS, IPC,
// network, cgroup).
func floor(n int, rootfs string) {
	bb := filepath.Join(rootfs, "bin", "busybox")
	run := func(sys *syscall.SysProcAttr) func() error {
		return func() error {
			pid, err := syscall.ForkExec(bb, []string{"true"}, &syscall.ProcAttr{Sys: sys})
			if err != nil {
				return err
			}
			var ws syscall.WaitStatus
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
				return err
			}
			if ws.ExitStatus() != 0 {
				return fmt.Errorf("busybox true: %v", ws)
			}
			return nil
		}
	}
	plain := median(n, run(&syscall.SysProcAttr{}))
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}}
	ns := median(n, run(&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
		syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET | syscall.CLONE_NEWCGROUP,
		UidMappings: m, GidMappings: m}))
	fmt.Printf("  kernel floor (fork+execve+exit of busybox true, median of %d): plain %s, in fresh user/mnt/pid/uts/ipc/net/cgroup namespaces %s\n", n, plain, ns)
}

// phaseLog collects the container driver's "container OP phases" debug
// lines of guest 1000.
type phaseLog struct {
	mu    sync.Mutex
	byOp  map[string]map[string][]time.Duration
	order map[string][]string
}

func (p *phaseLog) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			fmt.Fprintln(os.Stderr, sc.Text())
			continue
		}
		if lvl, _ := m["level"].(string); lvl == "WARN" || lvl == "ERROR" {
			fmt.Fprintln(os.Stderr, sc.Text())
		}
		msg, _ := m["msg"].(string)
		op, ok := strings.CutPrefix(msg, "container ")
		op, ok2 := strings.CutSuffix(op, " phases")
		if !ok || !ok2 || m["guest"] != float64(1000) {
			continue
		}
		p.mu.Lock()
		if p.byOp[op] == nil {
			p.byOp[op] = map[string][]time.Duration{}
			if p.order == nil {
				p.order = map[string][]string{}
			}
			// JSON objects keep no order: list the phases as logged.
			for _, k := range keysInOrder(sc.Bytes()) {
				if _, isNum := m[k].(float64); isNum && k != "guest" {
					p.order[op] = append(p.order[op], k)
				}
			}
		}
		for k, v := range m {
			if f, isNum := v.(float64); isNum && k != "guest" {
				p.byOp[op][k] = append(p.byOp[op][k], time.Duration(f))
			}
		}
		p.mu.Unlock()
	}
}

// keysInOrder returns the top-level keys of a JSON object in order.
func keysInOrder(b []byte) []string {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var keys []string
	if _, err := dec.Token(); err != nil {
		return nil
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return keys
		}
	}
	return keys
}

func (p *phaseLog) print() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, op := range []string{"start", "exec", "stop"} {
		if len(p.order[op]) == 0 {
			continue
		}
		fmt.Printf("    driver %s, median per phase:", op)
		for _, k := range p.order[op] {
			fmt.Printf(" %s %s", k, mid(p.byOp[op][k]))
		}
		fmt.Println()
	}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// task starts a task and waits for it (in one request, as the CLI does);
// a failed task is an error.
func task(ctx context.Context, cl *client.Client, method, path string, body any) error {
	t, err := cl.RunTask(ctx, method, path, body, nil)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if t.ExitStatus != api.TaskOK {
		return fmt.Errorf("%s %s: task %s", method, path, t.ExitStatus)
	}
	return nil
}

// berthCycle runs one cycle and appends each step's duration to steps
// (start task, exec, stop task).
func berthCycle(ctx context.Context, cl *client.Client, id int, steps *[3][]time.Duration) error {
	p := "/api/v1/guests/" + strconv.Itoa(id) + "/status/"
	t0 := time.Now()
	if err := task(ctx, cl, "POST", p+"start", nil); err != nil {
		return err
	}
	t1 := time.Now()
	code, err := cl.ContainerExec(ctx, id, api.ContainerExecRequest{Argv: []string{"/bin/true"}}, client.ExecIO{})
	if err != nil || code != 0 {
		return fmt.Errorf("exec: %d %v", code, err)
	}
	t2 := time.Now()
	err = task(ctx, cl, "POST", p+"stop", nil)
	t3 := time.Now()
	steps[0] = append(steps[0], t1.Sub(t0))
	steps[1] = append(steps[1], t2.Sub(t1))
	steps[2] = append(steps[2], t3.Sub(t2))
	return err
}

// mid is the median of ds.
func mid(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2].Round(10 * time.Microsecond)
}

func lxcCycle(dir, rootfs string) error {
	cfg := filepath.Join(dir, "lxcbench", "config")
	if _, err := os.Stat(cfg); err != nil {
		os.MkdirAll(filepath.Dir(cfg), 0o755)
		conf := "lxc.uts.name = lxcbench\nlxc.rootfs.path = dir:" + rootfs + "\nlxc.net.0.type = empty\nlxc.init.cmd = /sbin/init\n" +
			"lxc.mount.auto = proc:mixed sys:ro\nlxc.apparmor.profile = unconfined\nlxc.tty.max = 0\nlxc.pty.max = 16\n"
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"lxc-start", "-P", dir, "-n", "lxcbench", "-f", cfg, "-d"},
		{"lxc-attach", "-P", dir, "-n", "lxcbench", "--", "/bin/true"},
		{"lxc-stop", "-P", dir, "-n", "lxcbench", "-k"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func median(n int, cycle func() error) time.Duration {
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := cycle(); err != nil {
			log.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	return ds[n/2].Round(10 * time.Microsecond)
}

func densityRun(ctx context.Context, cl *client.Client, daemonPID, n int) {
	fmt.Printf("density: %d idle busybox containers\n", n)
	for i := 0; i < n; i++ {
		must(task(ctx, cl, "POST", "/api/v1/guests", api.Guest{ID: 2000 + i, Kind: api.GuestContainer, Config: map[string]string{"image": "bb"}}))
	}
	dropCaches()
	time.Sleep(time.Second)
	availBefore := memAvailable()
	kernBefore := kernelKiB()
	rssBefore := rssKiB(daemonPID)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		must(task(ctx, cl, "POST", "/api/v1/guests/"+strconv.Itoa(2000+i)+"/status/start", nil))
	}
	startAll := time.Since(t0)
	time.Sleep(2 * time.Second)
	dropCaches()
	time.Sleep(time.Second)
	availAfter := memAvailable()
	kernAfter := kernelKiB()
	var pss int64
	var procs int
	for i := 0; i < n; i++ {
		var st api.ContainerStatus
		must(cl.Do(ctx, "GET", "/api/v1/containers/"+strconv.Itoa(2000+i)+"/status", nil, &st))
		if st.Status != api.GuestRunning {
			log.Fatalf("container %d is %s", 2000+i, st.Status)
		}
		p, c := treePSS(st.PID)
		pss += p
		procs += c
	}
	used := (availBefore - availAfter) * 1024
	own := pss * 1024
	fmt.Printf("  started %d in %s (%.1f ms each, sequential API tasks)\n", n, startAll.Round(time.Millisecond), float64(startAll.Milliseconds())/float64(n))
	fmt.Printf("  MemAvailable drop: %.1f MiB; containers' own processes (%d): PSS %.1f MiB; berth daemon RSS growth: %.1f MiB\n",
		mib(used), procs, mib(own), mib((rssKiB(daemonPID)-rssBefore)*1024))
	fmt.Printf("  host memory per container beyond its own processes: %.0f KiB (goal < 1024 KiB)\n", float64(used-own)/1024/float64(n))
	fmt.Printf("  of which kernel (Slab+KernelStack+PageTables+Percpu growth): %.0f KiB per container\n", float64(kernAfter-kernBefore)/float64(n))

	t0 = time.Now()
	must(task(ctx, cl, "POST", "/api/v1/node/stopall", api.BulkRequest{Timeout: 60}))
	fmt.Printf("stopall of %d containers (clean shutdown, parallel): %s (goal < 10 s)\n", n, time.Since(t0).Round(time.Millisecond))
	for i := 0; i < n; i++ {
		must(task(ctx, cl, "DELETE", "/api/v1/guests/"+strconv.Itoa(2000+i), nil))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func dropCaches() {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

func memAvailable() int64 {
	return meminfo("/proc/meminfo", "MemAvailable:")
}

func meminfo(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// kernelKiB is the kernel's own memory: what namespaces, cgroups, mounts
// and page tables cost, less noisy than MemAvailable on a busy host.
func kernelKiB() int64 {
	var t int64
	for _, k := range []string{"Slab:", "KernelStack:", "PageTables:", "Percpu:"} {
		t += meminfo("/proc/meminfo", k)
	}
	return t
}

func rssKiB(pid int) int64 { return meminfo("/proc/"+strconv.Itoa(pid)+"/status", "VmRSS:") }

// treePSS sums the PSS (KiB) of pid and its descendants.
func treePSS(pid int) (int64, int) {
	total := meminfo("/proc/"+strconv.Itoa(pid)+"/smaps_rollup", "Pss:")
	count := 1
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return total, count
	}
	for _, f := range strings.Fields(string(b)) {
		c, _ := strconv.Atoi(f)
		p, k := treePSS(c)
		total += p
		count += k
	}
	return total, count
}
