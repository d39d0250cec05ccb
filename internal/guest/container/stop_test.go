package container_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/cgroup"
	"github.com/berthhq/berth/internal/guest/container"
	"github.com/berthhq/berth/internal/guest/container/cttest"
)

// restart returns a second driver on e's data dir: what a daemon started
// after a crash of e's finds (it knows nothing in memory).
func (e *env) restart() *container.Driver {
	e.t.Helper()
	self, _ := os.Executable()
	d, err := container.New(container.Options{DataDir: e.dir, Store: e.st, Images: e.img, Self: self})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { d.Close() })
	return d
}

// leftovers lists what of container id's run is still there: pidfile,
// cgroup directories in every hierarchy, init.
func (e *env) leftovers(id, pid int) []string {
	e.t.Helper()
	var left []string
	if _, err := os.Stat(e.d.PidFile(id)); err == nil {
		left = append(left, "pidfile")
	}
	if _, err := os.Stat(filepath.Join(e.dir, "containers", strconv.Itoa(id), "init.pid")); err == nil {
		left = append(left, "pidfile of an older berth")
	}
	l, err := cgroup.DetectHost()
	if err != nil {
		e.t.Fatal(err)
	}
	g, _ := l.Open("berth/" + strconv.Itoa(id))
	for _, d := range g.Dirs() {
		if _, err := os.Stat(d); err == nil {
			left = append(left, d)
		}
	}
	if pid > 0 {
		// Gone or a zombie waiting for its parent (this test process).
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && !zombie(b) {
			left = append(left, "init "+strconv.Itoa(pid))
		}
	}
	return left
}

func zombie(stat []byte) bool {
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X')
		}
	}
	return false
}

// TestStopLeavesNothing: however the container's end comes (a stop by the
// daemon that started it, a stop by a daemon started after a crash, a
// crash before the pidfile was written and a start after it), no
// pidfile, cgroup or process of the run is left, and the container starts
// again.
func TestStopLeavesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := e.create(160, map[string]string{"memory": "64", "pids": "100"})
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, pid int)
	}{
		{"stop by the daemon that started it", func(t *testing.T, pid int) {
			if err := e.d.Stop(ctx, g, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"stop after a daemon restart", func(t *testing.T, pid int) {
			d2 := e.restart()
			if st, err := d2.Adopt(ctx, g); err != nil || st.Status != api.GuestRunning || st.PID != pid {
				t.Fatalf("Adopt = %+v, %v; want running with init %d", st, err, pid)
			}
			if err := d2.Stop(ctx, g, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"suspended, stop after a daemon restart", func(t *testing.T, pid int) {
			if err := e.d.Suspend(ctx, g, cttest.Logger{T: t}); err != nil {
				t.Fatal(err)
			}
			d2 := e.restart()
			if st, err := d2.Adopt(ctx, g); err != nil || st.Status != api.GuestPaused {
				t.Fatalf("Adopt = %+v, %v; want paused", st, err)
			}
			if err := d2.Stop(ctx, g, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"pidfile where an older berth kept it, stop after a daemon restart", func(t *testing.T, pid int) {
			// An earlier berth kept the pidfile beside the layer: the
			// next daemon moves it to its run directory and adopts.
			b, err := os.ReadFile(e.d.PidFile(160))
			if err != nil {
				t.Fatal(err)
			}
			legacy := filepath.Join(e.dir, "containers/160/init.pid")
			if err := os.WriteFile(legacy, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(e.d.PidFile(160)); err != nil {
				t.Fatal(err)
			}
			d2 := e.restart()
			if _, err := os.Stat(legacy); err == nil {
				t.Error("the older pidfile is still there after the restart")
			}
			if got, err := os.ReadFile(d2.PidFile(160)); err != nil || string(got) != string(b) {
				t.Errorf("pidfile in the run directory: %q, %v; want %q", got, err, b)
			}
			if st, err := d2.Adopt(ctx, g); err != nil || st.Status != api.GuestRunning || st.PID != pid {
				t.Fatalf("Adopt = %+v, %v; want running with init %d", st, err, pid)
			}
			if err := d2.Stop(ctx, g, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"crash before the pidfile was written", func(t *testing.T, pid int) {
			if err := os.Remove(e.d.PidFile(160)); err != nil {
				t.Fatal(err)
			}
			d2 := e.restart()
			if st, err := d2.Adopt(ctx, g); err != nil || st.Status != api.GuestStopped {
				t.Fatalf("Adopt = %+v, %v; want stopped", st, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.start(g)
			st, err := e.d.Status(ctx, g)
			if err != nil || st.Status != api.GuestRunning {
				t.Fatalf("Status after start = %+v, %v", st, err)
			}
			if left := e.leftovers(160, 0); len(left) < 3 {
				t.Fatalf("a running container has only %v", left)
			}
			tc.end(t, st.PID)
			// The driver that started init reaps it in the background.
			deadline := time.Now().Add(5 * time.Second)
			for (len(e.leftovers(160, st.PID)) > 0 || e.status(g) != api.GuestStopped) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if left := e.leftovers(160, st.PID); len(left) > 0 {
				t.Errorf("left after the end: %v", left)
			}
			if s := e.status(g); s != api.GuestStopped {
				t.Errorf("status = %s, want stopped", s)
			}
		})
	}
	// And it still runs after all that.
	e.start(g)
	if out, code := e.run(g, "echo ok"); code != 0 || out != "ok\n" {
		t.Errorf("exec after the restarts: %q, %d", out, code)
	}
}

// TestCleanupSparesForeignProcesses: a process in a stopped container's
// cgroups that does not run in the container's root (another daemon's
// container of the same number on a shared host, an admin's process) is
// not killed by the cleanup; the cgroups go once it has left.
func TestCleanupSparesForeignProcesses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := e.create(161, nil)
	l, err := cgroup.DetectHost()
	if err != nil {
		t.Fatal(err)
	}
	grp, _ := l.Open("berth/161")
	if err := grp.Create(cgroup.Limits{}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := grp.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if st, err := e.d.Adopt(ctx, g); err != nil || st.Status != api.GuestStopped {
		t.Fatalf("Adopt = %+v, %v; want stopped", st, err)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the cleanup killed a process outside the container: %v", err)
	}
	if left := e.leftovers(161, 0); len(left) == 0 {
		t.Error("the cgroups of a live process were removed")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := e.d.Adopt(ctx, g); err != nil {
		t.Fatal(err)
	}
	if left := e.leftovers(161, 0); len(left) > 0 {
		t.Errorf("left after the foreign process ended: %v", left)
	}
}
