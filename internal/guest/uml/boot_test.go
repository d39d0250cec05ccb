package uml

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/vmtest"
)

func TestRootMounted(t *testing.T) {
	for _, tc := range []struct {
		name, mounts string
		want         bool
	}{
		{"initial rootfs only", "\nrootfs / rootfs rw 0 0\n", false},
		{"ext4 root", "\nrootfs / rootfs rw 0 0\n/dev/root / ext4 ro,relatime 0 0\nproc /proc proc rw 0 0\n", true},
		{"hostfs root", "/dev/root / hostfs ro 0 0\n", true},
		{"only other mounts", "proc /proc proc rw 0 0\nsys /sys sysfs rw 0 0\n", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RootMounted(tc.mounts); got != tc.want {
				t.Errorf("RootMounted(%q) = %v, want %v", tc.mounts, got, tc.want)
			}
		})
	}
}

func TestExcerpt(t *testing.T) {
	panicked := "a\nb\nCouldn't stat \"/x\" : err = 2\nKernel panic - not syncing: VFS: Unable to mount root fs\nCPU: 0 PID: 1\nStack:\n 6069\n"
	for _, tc := range []struct {
		name, text string
		n          int
		want       string
	}{
		{"ends at the panic line", panicked, 20, "a\nb\nCouldn't stat \"/x\" : err = 2\nKernel panic - not syncing: VFS: Unable to mount root fs"},
		{"last n lines before the panic", panicked, 2, "Couldn't stat \"/x\" : err = 2\nKernel panic - not syncing: VFS: Unable to mount root fs"},
		{"no panic: the tail", "1\n2\n3\n4\n", 2, "3\n4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := excerpt(tc.text, tc.n); got != tc.want {
				t.Errorf("excerpt = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBootErrorRetry(t *testing.T) {
	for _, tc := range []struct {
		name, console string
		retry         bool
		reason        string
	}{
		{"self-test timeout, root disk does not open", "alg: self-tests for sha256 using sha256-generic failed (rc=-110)\r\n" +
			"Failed to open 'root.ext4', errno = 11\r\nKernel panic - not syncing: VFS: Unable to mount root fs\r\nStack:\r\n", true, "the kernel panicked"},
		{"COW file over a changed base", "mtime mismatch (1700000000 vs 1700000100) of COW header vs backing file\n" +
			"Failed to open 'disk0.cow', errno = 22\nKernel panic - not syncing: VFS: Unable to mount root fs\n", false,
			`the kernel panicked ("mtime mismatch": another attempt cannot help)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newBootError(7, "the kernel panicked", tc.console)
			if e.retry != tc.retry || e.reason != tc.reason {
				t.Errorf("retry %v, reason %q; want %v, %q", e.retry, e.reason, tc.retry, tc.reason)
			}
			if strings.Contains(e.console, "\r") || strings.Contains(e.console, "Stack:") || !strings.HasSuffix(e.console, "Unable to mount root fs") {
				t.Errorf("console excerpt %q: want the lines up to the panic, without CRs", e.console)
			}
		})
	}
}

// logBuf is a guest.Logger that keeps the task log.
type logBuf struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Printf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, f+"\n", a...)
	l.t.Logf(f, a...)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// failAttempts makes the given boot attempts fail as boots on a loaded
// host do: the root disk cannot be opened (its base image is missing), so
// the real kernel panics with "VFS: Unable to mount root fs".
func failAttempts(d *Driver, missing string, attempts ...int) {
	d.bootArgs = func(attempt int, args []string) []string {
		if !slices.Contains(attempts, attempt) {
			return args
		}
		out := slices.Clone(args)
		for i, a := range out {
			if cow, _, ok := strings.Cut(a, ","); ok && strings.HasPrefix(cow, "ubd0=") {
				out[i] = cow + "," + missing
			}
		}
		return out
	}
}

// leftovers lists what a guest's failed or stopped run left behind:
// processes naming the guest (kernel, its helpers, the relay), its tap,
// sockets and pidfile, and POSIX locks on the files given.
func leftovers(d *Driver, id int, s Spec, files ...string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(mark(id)+"\x00")) {
			out = append(out, fmt.Sprintf("process %d: %q", pid, b))
		}
	}
	for _, n := range s.NICs {
		if d.Net.Exists(tapName(id, n.Index)) {
			out = append(out, "tap "+tapName(id, n.Index))
		}
	}
	for _, f := range []string{umid, consoleSock, pidFile} {
		if _, err := os.Lstat(filepath.Join(d.dir(id), f)); err == nil {
			out = append(out, f)
		}
	}
	locks, _ := os.ReadFile("/proc/locks")
	for _, f := range files {
		var st syscall.Stat_t
		if syscall.Stat(f, &st) != nil {
			continue
		}
		for _, l := range strings.Split(string(locks), "\n") {
			if fs := strings.Fields(l); len(fs) > 5 && strings.HasSuffix(fs[5], fmt.Sprintf(":%d", st.Ino)) {
				out = append(out, "lock on "+f+": "+l)
			}
		}
	}
	return out
}

// TestFailedBootRetried boots real UML guests whose first attempts fail
// the way boots on a loaded host do (the root disk does not open, the
// kernel panics): one whose second attempt comes up, with the failure
// and its console in the task log, and one that fails twice, with a clear
// error and nothing left behind (process, tap, socket, COW file or lock).
func TestFailedBootRetried(t *testing.T) {
	dir, im := sharedBase(t)
	br := testBridge(t, "bfr", vmtest.Subnet(4)+".1/24")
	missing := filepath.Join(dir, "missing.ext4")
	ctx := context.Background()
	newGuest := func(t *testing.T, d *Driver, id int) (api.Guest, Spec) {
		g := api.Guest{ID: id, Kind: api.GuestUML, Config: map[string]string{"memory": "96", "disk0": im.Root + ",cow",
			"net0": "tuntap,bridge=" + br, "append": "quiet berth.write=retry"}}
		s, err := d.spec(g)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Create(ctx, g, tlog{t}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			d.Stop(context.Background(), g, tlog{t})
			d.Destroy(context.Background(), g, tlog{t})
		})
		return g, s
	}

	t.Run("second attempt comes up", func(t *testing.T) {
		d := testDriver(t, filepath.Join(dir, "uml"))
		failAttempts(d, missing, 1)
		g, s := newGuest(t, d, vmtest.GuestID(5))
		log := &logBuf{t: t}
		if err := d.Start(ctx, g, log); err != nil {
			t.Fatal(err)
		}
		got := log.String()
		for _, want := range []string{"boot attempt 1 of 2 failed: the kernel panicked", `Couldn't stat "` + missing + `"`,
			"VFS: Unable to mount root fs", "booting again", fmt.Sprintf("UML guest %d is up", g.ID)} {
			if !strings.Contains(got, want) {
				t.Errorf("task log lacks %q:\n%s", want, got)
			}
		}
		if strings.Count(got, "UML kernel ") != 2 {
			t.Errorf("want two boots in the task log:\n%s", got)
		}
		if out, err := vmtest.WaitFor(d.ConsoleLog(g.ID), 5*time.Minute, []string{"Kernel panic"}, vmtest.BootMarker, "BERTH-MARKS: retry END", "BERTH-READY"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if h, err := ReadCOWHeader(d.cowPath(g.ID, s.Disks[0])); err != nil || h.Backing != im.Root {
			t.Errorf("COW file of the second attempt: %+v, %v", h, err)
		}
		if err := d.Shutdown(ctx, g, time.Minute, tlog{t}); err != nil {
			t.Fatal(err)
		}
		if left := leftovers(d, g.ID, s, im.Root, d.cowPath(g.ID, s.Disks[0])); len(left) > 0 {
			t.Errorf("left after shutdown: %q", left)
		}
	})

	t.Run("both attempts fail", func(t *testing.T) {
		d := testDriver(t, filepath.Join(dir, "uml"))
		failAttempts(d, missing, 1, 2)
		g, s := newGuest(t, d, vmtest.GuestID(6))
		log := &logBuf{t: t}
		err := d.Start(ctx, g, log)
		if err == nil {
			t.Fatal("Start succeeded with both attempts failing")
		}
		for _, want := range []string{fmt.Sprintf("UML guest %d failed to boot 2 times", g.ID), "attempt 1: the kernel panicked", "attempt 2: the kernel panicked",
			"VFS: Unable to mount root fs", "nothing was left running"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
		if strings.Count(log.String(), "UML kernel ") != 2 {
			t.Errorf("want two boots in the task log:\n%s", log)
		}
		if left := leftovers(d, g.ID, s, im.Root); len(left) > 0 {
			t.Errorf("left after the failed start: %q", left)
		}
		if _, err := os.Stat(d.cowPath(g.ID, s.Disks[0])); err == nil {
			t.Error("the failed boots left a COW file")
		}
		if st, err := d.Status(ctx, g); err != nil || st.Status != api.GuestStopped {
			t.Errorf("status after the failed start: %+v, %v", st, err)
		}
	})
}
