package container_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperOf finds the exec helper of the container whose init is pid: the
// other child of this (daemon) process in init's mount namespace.
func helperOf(t *testing.T, initPID int) int {
	t.Helper()
	mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", initPID))
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == initPID {
			continue
		}
		if m, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); m != mnt {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i < 0 || i+2 > len(s) {
			continue
		} else {
			s = s[i+2:]
		}
		f := strings.Fields(s)
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			return pid
		}
	}
	return 0
}

func cgroupLine(t *testing.T, s, controller string) string {
	t.Helper()
	for _, l := range strings.Split(s, "\n") {
		if parts := strings.SplitN(l, ":", 3); len(parts) == 3 && parts[1] == controller {
			return parts[2]
		}
	}
	t.Fatalf("no %s line in %q", controller, s)
	return ""
}

// TestExecHelper checks the exec helper a container gets by default: it
// sits outside the container's PID namespace and cgroups (so neither the
// guest nor its limits see it), the commands it spawns are inside both
// and confined, concurrent execs work, a helper that died is replaced by
// joining, and a stop ends it.
func TestExecHelper(t *testing.T) {
	e := newEnv(t)
	g := e.create(190, map[string]string{"pids": "64"})
	e.start(g)
	st, err := e.d.Status(context.Background(), g)
	if err != nil || st.PID == 0 {
		t.Fatalf("status: %+v %v", st, err)
	}
	h := helperOf(t, st.PID)
	if h == 0 {
		t.Fatal("no exec helper next to init")
	}
	// The daemon keeps only the memory the helper still runs on once init
	// runs: collect and give the rest back to the system, so that a
	// helper still using any of it would fail below.
	for i := 0; i < 3; i++ {
		runtime.GC()
		debug.FreeOSMemory()
	}
	// and reuse it: small objects of every size class, filled.
	var churn [][]byte
	for size := 8; size <= 32<<10; size += size/4 + 8 {
		for i := 0; i < 2000 && i*size < 4<<20; i++ {
			b := make([]byte, size)
			for j := range b {
				b[j] = 0xa5
			}
			churn = append(churn, b)
		}
	}
	runtime.KeepAlive(churn)

	// Back in the daemon's groups (it moves there once init runs, in its
	// own time).
	self, _ := os.ReadFile("/proc/self/cgroup")
	deadline := time.Now().Add(5 * time.Second)
	for {
		hc, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", h))
		if err != nil {
			t.Fatal(err)
		}
		var wrong []string
		for _, c := range []string{"memory", "pids", "cpu"} {
			if got, want := cgroupLine(t, string(hc), c), cgroupLine(t, string(self), c); got != want {
				wrong = append(wrong, fmt.Sprintf("helper's %s group %s, want the daemon's %s", c, got, want))
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(strings.Join(wrong, "; "))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Once busybox init's own start is over, the container's only
	// process is init: the helper counts against none of its limits.
	deadline = time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile("/sys/fs/cgroup/pids/berth/190/pids.current")
		if err != nil || strings.TrimSpace(string(b)) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pids.current %s while idle, want 1 (init)", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Not in the container's PID namespace: once init's own start is
	// over, the guest sees init and the shell (which counts without
	// forking) only.
	for deadline := time.Now().Add(5 * time.Second); ; {
		out, code := e.run(g, "set -- /proc/[0-9]*; echo $#")
		if code == 0 && strings.TrimSpace(out) == "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes the guest sees: %q (code %d), want 2 (init, sh)", out, code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Not the OOM killer's business: as the daemon.
	if a, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", h)); strings.TrimSpace(string(a)) != "0" {
		t.Errorf("helper oom_score_adj %s, want 0", a)
	}

	// Commands are in the container's groups (the cgroup namespace's
	// root), the guest's root and confined.
	out, code := e.run(g, "cat /proc/self/cgroup; grep -E '^(Uid|Seccomp|NoNewPrivs|CapBnd):' /proc/self/status")
	if code != 0 {
		t.Fatalf("exec: %d %s", code, out)
	}
	for _, c := range []string{"memory", "pids", "cpu"} {
		if got := cgroupLine(t, out, c); got != "/" {
			t.Errorf("command's %s group %q, want / (the container's)", c, got)
		}
	}
	for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "Uid:\t0\t0\t0\t0"} {
		if !strings.Contains(out, want) {
			t.Errorf("command status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "CapBnd:\t000001ffffffffff") {
		t.Errorf("capability bounding set not reduced:\n%s", out)
	}

	// Concurrent execs each get their own descriptors and exit code.
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, code := e.run(g, fmt.Sprintf("echo n%d; exit %d", i, i))
			if code != i || strings.TrimSpace(out) != fmt.Sprintf("n%d", i) {
				errs <- fmt.Sprintf("exec %d: code %d output %q", i, code, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	// All that went through the helper, which still waits for more.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h)); err != nil || strings.Contains(string(b), ") Z ") {
		t.Fatalf("helper %d ended while serving execs: %s %v", h, b, err)
	}

	// A helper that died: execs join the container instead.
	if err := unix.Kill(h, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if out, code := e.run(g, "echo joined"); code != 0 || strings.TrimSpace(out) != "joined" {
		t.Errorf("exec after the helper died: %d %q", code, out)
	}

	// A fresh start has a fresh helper, which the stop ends.
	if err := e.d.Stop(context.Background(), g, nil); err != nil {
		t.Fatal(err)
	}
	e.start(g)
	st, _ = e.d.Status(context.Background(), g)
	h = helperOf(t, st.PID)
	if h == 0 {
		t.Fatal("no exec helper after a restart")
	}
	if out, code := e.run(g, "echo again"); code != 0 || strings.TrimSpace(out) != "again" {
		t.Errorf("exec after restart: %d %q", code, out)
	}
	if err := e.d.Stop(context.Background(), g, nil); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(h))); err != nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h))
			t.Fatalf("helper %d still there after the stop: %s", h, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
