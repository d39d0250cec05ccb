package task_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/task"
)

// clock is a settable time source for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

type env struct {
	m      *task.Manager
	st     store.Store
	dbPath string
	logDir string
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newEnv opens a real store and a Manager on it; cleanup shuts the manager
// down and closes the store.
func newEnv(t *testing.T, opts task.Options) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{dbPath: filepath.Join(dir, "berth.db"), logDir: filepath.Join(dir, "tasks")}
	st, err := store.Open(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	m, err := task.NewManager(st, e.logDir, "pve1", testLogger(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		st.Close()
	})
	return e
}

func (e *env) start(t *testing.T, spec task.Spec, fn task.Func) string {
	t.Helper()
	u, err := e.m.Start(spec, fn)
	if err != nil {
		t.Fatalf("Start(%+v): %v", spec, err)
	}
	return u.String()
}

func (e *env) wait(t *testing.T, upid string) api.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tk, err := e.m.Wait(ctx, upid)
	if err != nil {
		t.Fatalf("Wait(%s): %v", upid, err)
	}
	return tk
}

func (e *env) logLines(t *testing.T, upid string) []string {
	t.Helper()
	l, err := e.m.ReadLog(upid, 0, 0)
	if err != nil {
		t.Fatalf("ReadLog(%s): %v", upid, err)
	}
	return l.Lines
}

func logFile(logDir string, u task.UPID) string {
	return filepath.Join(logDir, fmt.Sprintf("%X", u.StartTime%16), u.String())
}

var spec = task.Spec{Type: "qmstart", ID: "100", User: "root@pam"}

func TestTaskOK(t *testing.T) {
	c := newClock(time.Unix(0x5F8C1D2E, 0))
	e := newEnv(t, task.Options{Now: c.Now})
	u, err := e.m.Start(spec, func(ctx context.Context, l *task.Log) error {
		l.Printf("starting VM %d", 100)
		l.Println("a", "b")
		l.Printf("two\nlines\n")
		l.Println()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := task.UPID{Node: "pve1", PID: os.Getpid(), PStart: u.PStart, StartTime: 0x5F8C1D2E, Type: "qmstart", ID: "100", User: "root@pam"}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Errorf("UPID mismatch (-want +got):\n%s", diff)
	}
	if u.PStart == 0 {
		t.Errorf("PStart is 0; want this process's start time")
	}
	got := e.wait(t, u.String())
	wantTask := api.Task{
		UPID: u.String(), Node: "pve1", PID: os.Getpid(), PStart: u.PStart, StartTime: 0x5F8C1D2E,
		EndTime: 0x5F8C1D2E, Type: "qmstart", ID: "100", User: "root@pam",
		Status: api.TaskStopped, ExitStatus: api.TaskOK,
	}
	if diff := cmp.Diff(wantTask, got); diff != "" {
		t.Errorf("Wait mismatch (-want +got):\n%s", diff)
	}
	stored, err := e.m.Get(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantTask, stored); diff != "" {
		t.Errorf("Get mismatch (-want +got):\n%s", diff)
	}
	wantLines := []string{"starting VM 100", "a b", "two", "lines", "", "TASK OK"}
	if diff := cmp.Diff(wantLines, e.logLines(t, u.String())); diff != "" {
		t.Errorf("log mismatch (-want +got):\n%s", diff)
	}
	// The log is a plain file named after the UPID, Proxmox style.
	path := logFile(e.logDir, u)
	if !strings.HasSuffix(filepath.Dir(path), "/E") {
		t.Errorf("log dir %s, want subdirectory E (last hex digit of start time)", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o640 {
		t.Errorf("log mode %v, want 0640", mode)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(wantLines, "\n") + "\n"; string(b) != want {
		t.Errorf("log file = %q, want %q", b, want)
	}
	if n := e.m.Running(); n != 0 {
		t.Errorf("Running() = %d after the task ended, want 0", n)
	}
}

func TestTaskError(t *testing.T) {
	tests := []struct {
		name       string
		fn         task.Func
		wantStatus string
	}{
		{
			name:       "error",
			fn:         func(ctx context.Context, l *task.Log) error { return errors.New("disk full") },
			wantStatus: "disk full",
		},
		{
			name:       "multi-line error",
			fn:         func(ctx context.Context, l *task.Log) error { return errors.New("qemu failed:\n  no such device\n") },
			wantStatus: "qemu failed: no such device",
		},
		{
			name:       "error saying OK",
			fn:         func(ctx context.Context, l *task.Log) error { return errors.New("OK") },
			wantStatus: "error: OK",
		},
		{
			name:       "empty error",
			fn:         func(ctx context.Context, l *task.Log) error { return errors.New("") },
			wantStatus: "unknown error",
		},
		{
			name:       "panic",
			fn:         func(ctx context.Context, l *task.Log) error { panic("boom") },
			wantStatus: "panic: boom",
		},
		{
			name: "goexit",
			fn: func(ctx context.Context, l *task.Log) error {
				runtime.Goexit()
				return nil
			},
			wantStatus: "task function exited without returning",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, task.Options{})
			upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
				l.Println("working")
				return tt.fn(ctx, l)
			})
			got := e.wait(t, upid)
			if got.Status != api.TaskStopped || got.ExitStatus != tt.wantStatus {
				t.Errorf("status %q exitstatus %q, want stopped / %q", got.Status, got.ExitStatus, tt.wantStatus)
			}
			stored, err := e.m.Get(context.Background(), upid)
			if err != nil {
				t.Fatal(err)
			}
			if stored.ExitStatus != tt.wantStatus {
				t.Errorf("stored exitstatus %q, want %q", stored.ExitStatus, tt.wantStatus)
			}
			want := []string{"working", "TASK ERROR: " + tt.wantStatus}
			if diff := cmp.Diff(want, e.logLines(t, upid)); diff != "" {
				t.Errorf("log mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStop(t *testing.T) {
	tests := []struct {
		name string
		ret  func(ctx context.Context) error
	}{
		{"ctx error", func(ctx context.Context) error { return ctx.Err() }},
		{"wrapped ctx error", func(ctx context.Context) error { return fmt.Errorf("copy disk: %w", ctx.Err()) }},
		{"cause", func(ctx context.Context) error { return context.Cause(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, task.Options{})
			started := make(chan struct{})
			upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
				l.Println("waiting")
				close(started)
				<-ctx.Done()
				l.Println("cleaning up")
				return tt.ret(ctx)
			})
			<-started
			if n := e.m.Running(); n != 1 {
				t.Errorf("Running() = %d, want 1", n)
			}
			if err := e.m.Stop(upid); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			got := e.wait(t, upid)
			if got.ExitStatus != "interrupted by user" {
				t.Errorf("exitstatus %q, want %q", got.ExitStatus, "interrupted by user")
			}
			want := []string{"waiting", "received stop request", "cleaning up", "TASK ERROR: interrupted by user"}
			if diff := cmp.Diff(want, e.logLines(t, upid)); diff != "" {
				t.Errorf("log mismatch (-want +got):\n%s", diff)
			}
			if err := e.m.Stop(upid); !errors.Is(err, task.ErrNotRunning) {
				t.Errorf("Stop of a finished task = %v, want ErrNotRunning", err)
			}
		})
	}
}

func TestStopErrors(t *testing.T) {
	e := newEnv(t, task.Options{})
	unknown := "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:"
	if err := e.m.Stop(unknown); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stop(unknown) = %v, want ErrNotFound", err)
	}
	if err := e.m.Stop("nonsense"); !errors.Is(err, task.ErrInvalidUPID) {
		t.Errorf("Stop(nonsense) = %v, want ErrInvalidUPID", err)
	}
	if _, err := e.m.Get(context.Background(), unknown); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := e.m.ReadLog(unknown, 0, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ReadLog(unknown) = %v, want ErrNotFound", err)
	}
	if err := e.m.Follow(context.Background(), unknown, 0, func(string) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Follow(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := e.m.Wait(context.Background(), unknown); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Wait(unknown) = %v, want ErrNotFound", err)
	}
}

func TestStartRejectsBadSpec(t *testing.T) {
	e := newEnv(t, task.Options{})
	for _, s := range []task.Spec{
		{Type: "", User: "root@pam"},
		{Type: "qm:start", User: "root@pam"},
		{Type: "qmstart", ID: "../etc", User: "root@pam"},
		{Type: "qmstart", User: "token:name"},
		{Type: "qmstart", User: "a/b@pam"},
		{Type: "qmstart"},
	} {
		if u, err := e.m.Start(s, func(context.Context, *task.Log) error { return nil }); !errors.Is(err, task.ErrInvalidUPID) {
			t.Errorf("Start(%+v) = %v, %v; want ErrInvalidUPID", s, u, err)
		}
	}
	if tasks, err := e.m.List(context.Background(), task.Filter{}); err != nil || len(tasks) != 0 {
		t.Errorf("List after rejected starts = %v, %v; want nothing", tasks, err)
	}
}

func TestUniqueUPIDs(t *testing.T) {
	c := newClock(time.Unix(1_700_000_000, 0))
	e := newEnv(t, task.Options{Now: c.Now})
	block := make(chan struct{})
	var upids []string
	for range 5 {
		upids = append(upids, e.start(t, spec, func(ctx context.Context, l *task.Log) error {
			<-block
			return nil
		}))
	}
	// A different spec in the same second is not bumped.
	other := e.start(t, task.Spec{Type: "qmstart", ID: "101", User: "root@pam"}, func(context.Context, *task.Log) error { return nil })
	close(block)
	seen := map[string]bool{}
	for i, s := range upids {
		if seen[s] {
			t.Fatalf("duplicate UPID %s", s)
		}
		seen[s] = true
		u, err := task.ParseUPID(s)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(1_700_000_000 + i); u.StartTime != want {
			t.Errorf("task %d start time %d, want %d", i, u.StartTime, want)
		}
		e.wait(t, s)
	}
	if u, _ := task.ParseUPID(other); u.StartTime != 1_700_000_000 {
		t.Errorf("other task start time %d, want unbumped 1700000000", u.StartTime)
	}
	e.wait(t, other)

	// A finished task in the same second still blocks its UPID.
	again := e.start(t, spec, func(context.Context, *task.Log) error { return nil })
	if seen[again] {
		t.Errorf("UPID %s reused", again)
	}
	e.wait(t, again)
}

// TestUPIDCollisionWithStore checks the safeguard against UPIDs already in
// the index: a second Manager in this process has the same PID and start
// time but none of the first one's in-memory state.
func TestUPIDCollisionWithStore(t *testing.T) {
	c := newClock(time.Unix(1_700_000_000, 0))
	e := newEnv(t, task.Options{Now: c.Now})
	first := e.start(t, spec, func(context.Context, *task.Log) error { return nil })
	e.wait(t, first)
	m2, err := task.NewManager(e.st, e.logDir, "pve1", testLogger(t), task.Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	u, err := m2.Start(spec, func(context.Context, *task.Log) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if u.String() == first {
		t.Fatalf("second manager reused UPID %s", first)
	}
	if u.StartTime != 1_700_000_001 {
		t.Errorf("start time %d, want bumped to 1700000001", u.StartTime)
	}
	if _, err := m2.Wait(context.Background(), u.String()); err != nil {
		t.Fatal(err)
	}
	if err := m2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first task's log was left alone.
	if diff := cmp.Diff([]string{"TASK OK"}, e.logLines(t, first)); diff != "" {
		t.Errorf("first log changed (-want +got):\n%s", diff)
	}
}

func TestList(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	c := newClock(base)
	e := newEnv(t, task.Options{Now: c.Now})
	type def struct {
		at   int // seconds after base
		spec task.Spec
		err  error
	}
	defs := []def{
		{0, task.Spec{Type: "qmstart", ID: "100", User: "root@pam"}, nil},
		{10, task.Spec{Type: "qmstop", ID: "100", User: "root@pam"}, errors.New("timeout")},
		{20, task.Spec{Type: "qmstart", ID: "101", User: "alice@berth"}, nil},
		{30, task.Spec{Type: "aptupdate", User: "root@pam"}, errors.New("no network")},
		{40, task.Spec{Type: "qmstart", ID: "100", User: "root@pam"}, nil},
	}
	var upids []string
	for _, d := range defs {
		c.Set(base.Add(time.Duration(d.at) * time.Second))
		upid := e.start(t, d.spec, func(context.Context, *task.Log) error { return d.err })
		e.wait(t, upid)
		upids = append(upids, upid)
	}
	c.Set(base.Add(50 * time.Second))
	block := make(chan struct{})
	defer close(block)
	running := e.start(t, task.Spec{Type: "vzdump", ID: "101", User: "root@pam"}, func(ctx context.Context, l *task.Log) error {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil
	})
	all := append(append([]string{}, upids...), running)

	// rev returns the UPIDs with these indexes of all, newest first.
	rev := func(idx ...int) []string {
		out := []string{}
		for i := len(idx) - 1; i >= 0; i-- {
			out = append(out, all[idx[i]])
		}
		return out
	}
	tests := []struct {
		name string
		f    task.Filter
		want []string
	}{
		{"all", task.Filter{}, rev(0, 1, 2, 3, 4, 5)},
		{"errors", task.Filter{Errors: true}, rev(1, 3)},
		{"running", task.Filter{Running: true}, rev(5)},
		{"guest", task.Filter{GuestID: "100"}, rev(0, 1, 4)},
		{"type", task.Filter{Type: "qmstart"}, rev(0, 2, 4)},
		{"guest and type", task.Filter{GuestID: "101", Type: "qmstart"}, rev(2)},
		{"since", task.Filter{Since: base.Add(30 * time.Second)}, rev(3, 4, 5)},
		{"until", task.Filter{Until: base.Add(10 * time.Second)}, rev(0, 1)},
		{"since and until", task.Filter{Since: base.Add(5 * time.Second), Until: base.Add(35 * time.Second)}, rev(1, 2, 3)},
		{"limit", task.Filter{Limit: 2}, rev(4, 5)},
		{"type and limit", task.Filter{Type: "qmstart", Limit: 1}, rev(4)},
		{"errors and guest", task.Filter{Errors: true, GuestID: "100"}, rev(1)},
		{"nothing", task.Filter{Type: "nosuch"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tasks, err := e.m.List(context.Background(), tt.f)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, tk := range tasks {
				got = append(got, tk.UPID)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("List(%+v) mismatch (-want +got):\n%s", tt.f, diff)
			}
		})
	}
}

func TestReadLogPaging(t *testing.T) {
	e := newEnv(t, task.Options{})
	release := make(chan struct{})
	logged := make(chan struct{})
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
		for i := range 5 {
			l.Printf("line %d", i)
		}
		close(logged)
		<-release
		return nil
	})
	<-logged
	running, err := e.m.ReadLog(upid, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := api.TaskLog{Start: 1, Total: 5, Lines: []string{"line 1", "line 2"}, Running: true}
	if diff := cmp.Diff(want, running); diff != "" {
		t.Errorf("ReadLog while running mismatch (-want +got):\n%s", diff)
	}
	close(release)
	e.wait(t, upid)
	tests := []struct {
		start, limit int
		want         api.TaskLog
	}{
		{0, 0, api.TaskLog{Start: 0, Total: 6, Lines: []string{"line 0", "line 1", "line 2", "line 3", "line 4", "TASK OK"}}},
		{4, 10, api.TaskLog{Start: 4, Total: 6, Lines: []string{"line 4", "TASK OK"}}},
		{5, 1, api.TaskLog{Start: 5, Total: 6, Lines: []string{"TASK OK"}}},
		{6, 10, api.TaskLog{Start: 6, Total: 6, Lines: []string{}}},
		{100, 0, api.TaskLog{Start: 100, Total: 6, Lines: []string{}}},
	}
	for _, tt := range tests {
		got, err := e.m.ReadLog(upid, tt.start, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ReadLog(%d, %d) mismatch (-want +got):\n%s", tt.start, tt.limit, diff)
		}
	}
	if _, err := e.m.ReadLog(upid, -1, 0); err == nil {
		t.Errorf("ReadLog with negative start succeeded")
	}
}

func TestFollowLive(t *testing.T) {
	e := newEnv(t, task.Options{})
	step := make(chan struct{})
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
		l.Println("before")
		<-step
		l.Println("after one")
		<-step
		l.Printf("after two\nand three")
		return errors.New("failed")
	})
	lines := make(chan string, 100)
	followErr := make(chan error, 1)
	go func() {
		followErr <- e.m.Follow(context.Background(), upid, 0, func(line string) error {
			lines <- line
			return nil
		})
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("Follow emitted %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Follow did not emit %q", want)
		}
	}
	expect("before")
	// Nothing more may arrive until the task writes it.
	select {
	case l := <-lines:
		t.Fatalf("Follow emitted %q before it was written", l)
	case err := <-followErr:
		t.Fatalf("Follow returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	step <- struct{}{}
	expect("after one")
	step <- struct{}{}
	expect("after two")
	expect("and three")
	expect("TASK ERROR: failed")
	select {
	case err := <-followErr:
		if err != nil {
			t.Fatalf("Follow: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not return after the task ended")
	}
	if len(lines) != 0 {
		t.Errorf("extra lines: %d", len(lines))
	}
	// Once Follow returned, the index shows the end.
	tk, err := e.m.Get(context.Background(), upid)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != api.TaskStopped || tk.ExitStatus != "failed" {
		t.Errorf("after Follow: status %q exitstatus %q, want stopped/failed", tk.Status, tk.ExitStatus)
	}
}

func TestFollowFinishedAndStart(t *testing.T) {
	e := newEnv(t, task.Options{})
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
		l.Println("one\ntwo\nthree")
		return nil
	})
	e.wait(t, upid)
	for _, tt := range []struct {
		start int
		want  []string
	}{
		{0, []string{"one", "two", "three", "TASK OK"}},
		{2, []string{"three", "TASK OK"}},
		{4, nil},
	} {
		var got []string
		if err := e.m.Follow(context.Background(), upid, tt.start, func(l string) error {
			got = append(got, l)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Follow from %d mismatch (-want +got):\n%s", tt.start, diff)
		}
	}
	stop := errors.New("enough")
	n := 0
	err := e.m.Follow(context.Background(), upid, 0, func(string) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Follow with failing emit = %v after %d lines, want %v after 1", err, n, stop)
	}
}

func TestFollowStartInFutureAndCancel(t *testing.T) {
	e := newEnv(t, task.Options{})
	release := make(chan struct{})
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
		l.Println("zero")
		l.Println("one")
		<-release
		l.Println("two")
		return nil
	})
	defer func() { close(release); e.wait(t, upid) }()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	var got []string
	go func() {
		errc <- e.m.Follow(ctx, upid, 1, func(l string) error {
			got = append(got, l)
			return nil
		})
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Follow after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Follow ignored its context")
	}
	if diff := cmp.Diff([]string{"one"}, got); diff != "" {
		t.Errorf("Follow from 1 mismatch (-want +got):\n%s", diff)
	}
}

func TestWaitContext(t *testing.T) {
	e := newEnv(t, task.Options{})
	release := make(chan struct{})
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error { <-release; return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := e.m.Wait(ctx, upid); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on a running task with expiring ctx = %v, want DeadlineExceeded", err)
	}
	tk, err := e.m.Get(context.Background(), upid)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != api.TaskRunning || tk.EndTime != 0 || tk.ExitStatus != "" {
		t.Errorf("running task in index: %+v", tk)
	}
	close(release)
	if tk := e.wait(t, upid); tk.ExitStatus != api.TaskOK {
		t.Errorf("exitstatus %q, want OK", tk.ExitStatus)
	}
}

func TestRecover(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "berth.db")
	logDir := filepath.Join(dir, "tasks")
	st1, err := store.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := task.NewManager(st1, logDir, "pve1", testLogger(t), task.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logged := make(chan struct{})
	release := make(chan struct{})
	crashed, err := m1.Start(spec, func(ctx context.Context, l *task.Log) error {
		l.Println("copying disk")
		close(logged)
		<-release
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	done, err := m1.Start(task.Spec{Type: "qmstop", ID: "100", User: "root@pam"}, func(context.Context, *task.Log) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Wait(context.Background(), done.String()); err != nil {
		t.Fatal(err)
	}
	// Wait writes the finished task's index entry after Wait returns; let
	// it land before the crash (TestRecoverFromLogs covers a crash before).
	waitIndexed(t, st1, done)
	<-logged
	// Crash: the store goes away without Shutdown.
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Let the orphaned goroutine end before the temp dir is removed.
		close(release)
		m1.Shutdown(context.Background())
	}()

	// A crashed task whose log ends in a partial line, and one without a
	// log, written straight into the store as a previous process would.
	st2, err := store.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	partial := task.UPID{Node: "pve1", PID: 99, PStart: 1234, StartTime: 1_600_000_000, Type: "vzdump", ID: "101", User: "root@pam"}
	nolog := task.UPID{Node: "pve1", PID: 99, PStart: 1234, StartTime: 1_600_000_001, Type: "vzdump", ID: "102", User: "root@pam"}
	for _, u := range []task.UPID{partial, nolog} {
		tk := api.Task{UPID: u.String(), Node: u.Node, PID: u.PID, PStart: u.PStart, StartTime: u.StartTime,
			Type: u.Type, ID: u.ID, User: u.User, Status: api.TaskRunning}
		key := fmt.Sprintf("tasks/%016X-%s", u.StartTime, u.String())
		if _, err := store.PutJSON(context.Background(), st2, key, tk, store.Cond{Create: true}); err != nil {
			t.Fatal(err)
		}
	}
	partialPath := logFile(logDir, partial)
	if err := os.MkdirAll(filepath.Dir(partialPath), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(partialPath, []byte("dumping\nhalf a li"), 0o640); err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(1_600_000_100, 0)
	if err := os.Chtimes(partialPath, mtime, mtime); err != nil {
		t.Fatal(err)
	}

	now := time.Unix(1_800_000_000, 0)
	m2, err := task.NewManager(st2, logDir, "pve1", testLogger(t), task.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Shutdown(context.Background())
	n, err := m2.Recover(context.Background())
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if n != 3 {
		t.Errorf("Recover repaired %d tasks, want 3", n)
	}
	running, err := m2.List(context.Background(), task.Filter{Running: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 0 {
		t.Errorf("tasks still running after Recover: %+v", running)
	}
	ctx := context.Background()
	check := func(upid string, wantEnd int64, wantLog []string) {
		t.Helper()
		tk, err := m2.Get(ctx, upid)
		if err != nil {
			t.Fatal(err)
		}
		if tk.Status != api.TaskStopped || tk.ExitStatus != api.TaskUnexpected {
			t.Errorf("%s: status %q exitstatus %q, want stopped / %q", upid, tk.Status, tk.ExitStatus, api.TaskUnexpected)
		}
		if wantEnd != 0 && tk.EndTime != wantEnd {
			t.Errorf("%s: endtime %d, want %d", upid, tk.EndTime, wantEnd)
		}
		if tk.EndTime < tk.StartTime {
			t.Errorf("%s: endtime %d before starttime %d", upid, tk.EndTime, tk.StartTime)
		}
		l, err := m2.ReadLog(upid, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(wantLog, l.Lines); diff != "" {
			t.Errorf("%s: log mismatch (-want +got):\n%s", upid, diff)
		}
	}
	check(crashed.String(), 0, []string{"copying disk", "TASK ERROR: unexpected status"})
	check(partial.String(), mtime.Unix(), []string{"dumping", "half a li", "TASK ERROR: unexpected status"})
	check(nolog.String(), now.Unix(), []string{"TASK ERROR: unexpected status"})

	// The task that had finished is untouched.
	tk, err := m2.Get(ctx, done.String())
	if err != nil {
		t.Fatal(err)
	}
	if tk.ExitStatus != api.TaskOK {
		t.Errorf("finished task exitstatus %q, want OK", tk.ExitStatus)
	}

	// Recover is idempotent.
	if n, err := m2.Recover(ctx); err != nil || n != 0 {
		t.Errorf("second Recover = %d, %v; want 0, nil", n, err)
	}
	check(partial.String(), mtime.Unix(), []string{"dumping", "half a li", "TASK ERROR: unexpected status"})
}

// waitIndexed waits until the task has its final index entry.
func waitIndexed(t *testing.T, st store.Store, u task.UPID) {
	t.Helper()
	key := fmt.Sprintf("tasks/%016X-%s", u.StartTime, u.String())
	deadline := time.Now().Add(10 * time.Second)
	for {
		tk, _, err := store.GetJSON[api.Task](context.Background(), st, key)
		if err == nil && tk.Status == api.TaskStopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not indexed as stopped after 10s: %+v, %v", u, tk, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRecoverFromLogs covers crashes while a task has a log but no index
// entry: a task's entry is written only when it ends, after its waiters
// were released.
func TestRecoverFromLogs(t *testing.T) {
	e := newEnv(t, task.Options{Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
	mtime := time.Unix(1_600_000_100, 0)
	mk := func(sec int64, content string) task.UPID {
		u := task.UPID{Node: "pve1", PID: 99, PStart: 1234, StartTime: 1_600_000_000 + sec, Type: "vzstart", ID: "1000", User: "root@pam"}
		p := logFile(e.logDir, u)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name       string
		u          task.UPID
		wantStatus string
		wantEnd    int64
		wantLog    []string
	}{
		{"crash between start and end", mk(0, "starting\n"), api.TaskUnexpected, mtime.Unix(),
			[]string{"starting", "TASK ERROR: unexpected status"}},
		{"crash right after the log was created", mk(1, ""), api.TaskUnexpected, 1_800_000_000,
			[]string{"TASK ERROR: unexpected status"}},
		{"crash in a partial line", mk(2, "starting\nhal"), api.TaskUnexpected, mtime.Unix(),
			[]string{"starting", "hal", "TASK ERROR: unexpected status"}},
		{"crash after the end, before the index write", mk(3, "starting\nTASK OK\n"), api.TaskOK, mtime.Unix(),
			[]string{"starting", "TASK OK"}},
		{"failed task, crash before the index write", mk(4, "TASK ERROR: no such device\n"), "no such device", mtime.Unix(),
			[]string{"TASK ERROR: no such device"}},
	}
	// A file in the log directory that is not a task log is left alone.
	if err := os.WriteFile(filepath.Join(e.logDir, "README"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n, err := e.m.Recover(ctx)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if n != len(tests) {
		t.Errorf("Recover repaired %d tasks, want %d", n, len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := fmt.Sprintf("tasks/%016X-%s", tc.u.StartTime, tc.u.String())
			tk, _, err := store.GetJSON[api.Task](ctx, e.st, key)
			if err != nil {
				t.Fatalf("index entry: %v", err)
			}
			if tk.Status != api.TaskStopped || tk.ExitStatus != tc.wantStatus || tk.EndTime != tc.wantEnd {
				t.Errorf("entry %+v, want stopped, exit status %q, end %d", tk, tc.wantStatus, tc.wantEnd)
			}
			if diff := cmp.Diff(tc.wantLog, e.logLines(t, tc.u.String())); diff != "" {
				t.Errorf("log mismatch (-want +got):\n%s", diff)
			}
		})
	}
	// Idempotent.
	if n, err := e.m.Recover(ctx); err != nil || n != 0 {
		t.Errorf("second Recover = %d, %v; want 0, nil", n, err)
	}
}

func TestRecoverSkipsOwnRunningTasks(t *testing.T) {
	e := newEnv(t, task.Options{})
	release := make(chan struct{})
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error { <-release; return nil })
	n, err := e.m.Recover(context.Background())
	if err != nil || n != 0 {
		t.Errorf("Recover with an own running task = %d, %v; want 0, nil", n, err)
	}
	close(release)
	if tk := e.wait(t, upid); tk.ExitStatus != api.TaskOK {
		t.Errorf("exitstatus %q, want OK", tk.ExitStatus)
	}
}

func TestPruneByCount(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	c := newClock(base)
	e := newEnv(t, task.Options{MaxCount: 3, Now: c.Now})
	// An old running task counts but is never removed.
	block := make(chan struct{})
	defer close(block)
	old := e.start(t, task.Spec{Type: "vzdump", User: "root@pam"}, func(ctx context.Context, l *task.Log) error {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil
	})
	var upids []string
	for i := range 5 {
		c.Set(base.Add(time.Duration(i+1) * time.Minute))
		upid := e.start(t, spec, func(context.Context, *task.Log) error { return nil })
		e.wait(t, upid)
		upids = append(upids, upid)
	}
	if err := e.m.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	tasks, err := e.m.List(context.Background(), task.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tk := range tasks {
		got = append(got, tk.UPID)
	}
	want := []string{upids[4], upids[3], old}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after Prune (-want +got):\n%s", diff)
	}
	for i, upid := range upids {
		u, _ := task.ParseUPID(upid)
		_, err := os.Stat(logFile(e.logDir, u))
		if kept := i >= 3; kept != (err == nil) {
			t.Errorf("task %d: kept=%v but log stat error %v", i, kept, err)
		}
	}
}

func TestPruneByAge(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	c := newClock(base)
	e := newEnv(t, task.Options{MaxAge: time.Hour, Now: c.Now})
	var upids []string
	for _, at := range []time.Duration{0, 30 * time.Minute, 90 * time.Minute, 100 * time.Minute} {
		c.Set(base.Add(at))
		upid := e.start(t, spec, func(context.Context, *task.Log) error { return nil })
		e.wait(t, upid)
		upids = append(upids, upid)
	}
	c.Set(base.Add(2 * time.Hour))
	if err := e.m.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	tasks, err := e.m.List(context.Background(), task.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tk := range tasks {
		got = append(got, tk.UPID)
	}
	if diff := cmp.Diff([]string{upids[3], upids[2]}, got); diff != "" {
		t.Errorf("after Prune (-want +got):\n%s", diff)
	}
	for i, upid := range upids {
		_, err := e.m.ReadLog(upid, 0, 0)
		if kept := i >= 2; kept != (err == nil) {
			t.Errorf("task %d: kept=%v but ReadLog error %v", i, kept, err)
		}
	}
}

// TestPruneSlack checks that tasks that end let the index grow a tenth
// past MaxCount before they prune it (a prune reads the whole index),
// and that a prune then goes back to MaxCount, oldest first, entries and
// logs.
func TestPruneSlack(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	c := newClock(base)
	e := newEnv(t, task.Options{MaxCount: 10, Now: c.Now})
	var upids []string
	run := func(m *task.Manager) {
		c.Set(base.Add(time.Duration(len(upids)+1) * time.Second))
		upid, err := m.Start(spec, func(context.Context, *task.Log) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Wait(context.Background(), upid.String()); err != nil {
			t.Fatal(err)
		}
		upids = append(upids, upid.String())
	}
	indexed := func() []string {
		objs, err := e.st.List(context.Background(), task.KeyPrefix)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range objs {
			var tk api.Task
			if err := json.Unmarshal(o.Value, &tk); err != nil {
				t.Fatal(err)
			}
			out = append(out, tk.UPID)
		}
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A prune now: the next one by time is due in a minute.
	if err := e.m.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	for range 11 {
		run(e.m)
	}
	if err := e.m.Shutdown(ctx); err != nil { // every commit (and prune) done
		t.Fatal(err)
	}
	if got := indexed(); !slices.Equal(got, upids) {
		t.Fatalf("index after 11 tasks with MaxCount 10: %d entries %q, want all 11 (within the slack)", len(got), got)
	}

	// A manager on the same index prunes when its first task ends (its
	// first prune is due at once): back to MaxCount, the two oldest go.
	m, err := task.NewManager(e.st, e.logDir, "pve1", testLogger(t), task.Options{MaxCount: 10, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	run(m)
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := indexed(); !slices.Equal(got, upids[2:]) {
		t.Errorf("index after the prune: %q, want the newest 10 %q", got, upids[2:])
	}
	for i, upid := range upids {
		u, _ := task.ParseUPID(upid)
		_, err := os.Stat(logFile(e.logDir, u))
		if kept := i >= 2; kept != (err == nil) {
			t.Errorf("task %d: kept=%v but log stat error %v", i, kept, err)
		}
	}
}

func TestPruneAfterTaskEnds(t *testing.T) {
	e := newEnv(t, task.Options{MaxCount: 2})
	for range 6 {
		upid := e.start(t, task.Spec{Type: "t", User: "u"}, func(context.Context, *task.Log) error { return nil })
		e.wait(t, upid)
	}
	// Tasks prune as they end once the count exceeds MaxCount; the last
	// task's own prune may still be running after Wait, so check the
	// count within a bound rather than exactly.
	var tasks []api.Task
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		tasks, err = e.m.List(context.Background(), task.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) <= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(tasks) > 3 {
		t.Errorf("%d tasks after automatic pruning with MaxCount 2, want at most 3", len(tasks))
	}
}

func TestShutdownWaits(t *testing.T) {
	e := newEnv(t, task.Options{})
	release := make(chan struct{})
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	errc := make(chan error, 1)
	go func() { errc <- e.m.Shutdown(context.Background()) }()
	select {
	case err := <-errc:
		t.Fatalf("Shutdown returned %v while a task was running", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := e.m.Start(spec, func(context.Context, *task.Log) error { return nil }); !errors.Is(err, task.ErrShuttingDown) {
		t.Errorf("Start during Shutdown = %v, want ErrShuttingDown", err)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	tk, err := e.m.Get(context.Background(), upid)
	if err != nil {
		t.Fatal(err)
	}
	if tk.ExitStatus != api.TaskOK {
		t.Errorf("exitstatus %q, want OK (task finished on its own)", tk.ExitStatus)
	}
}

func TestShutdownCancels(t *testing.T) {
	e := newEnv(t, task.Options{})
	var upids []string
	for _, id := range []string{"100", "101"} {
		upids = append(upids, e.start(t, task.Spec{Type: "qmstart", ID: id, User: "root@pam"},
			func(ctx context.Context, l *task.Log) error {
				<-ctx.Done()
				time.Sleep(10 * time.Millisecond) // cleanup takes a moment
				return ctx.Err()
			}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := e.m.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if n := e.m.Running(); n != 0 {
		t.Errorf("Running() = %d after Shutdown, want 0", n)
	}
	running, err := e.m.List(context.Background(), task.Filter{Running: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 0 {
		t.Errorf("index entries still running after Shutdown: %+v", running)
	}
	for _, upid := range upids {
		tk, err := e.m.Get(context.Background(), upid)
		if err != nil {
			t.Fatal(err)
		}
		if tk.ExitStatus != "interrupted by daemon shutdown" {
			t.Errorf("%s exitstatus %q, want %q", upid, tk.ExitStatus, "interrupted by daemon shutdown")
		}
		want := []string{"received shutdown request", "TASK ERROR: interrupted by daemon shutdown"}
		if diff := cmp.Diff(want, e.logLines(t, upid)); diff != "" {
			t.Errorf("log mismatch (-want +got):\n%s", diff)
		}
	}
}

func TestLinesAfterEndAreDropped(t *testing.T) {
	e := newEnv(t, task.Options{})
	var leaked *task.Log
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
		leaked = l
		l.Println("inside")
		return nil
	})
	e.wait(t, upid)
	leaked.Println("too late")
	if diff := cmp.Diff([]string{"inside", "TASK OK"}, e.logLines(t, upid)); diff != "" {
		t.Errorf("log mismatch (-want +got):\n%s", diff)
	}
}

func TestConcurrent(t *testing.T) {
	e := newEnv(t, task.Options{MaxCount: 10})
	const tasks, writers, lines = 8, 4, 25
	var wg sync.WaitGroup
	for i := range tasks {
		wg.Go(func() {
			upid, err := e.m.Start(task.Spec{Type: "stress", ID: fmt.Sprint(i), User: "root@pam"}, func(ctx context.Context, l *task.Log) error {
				var inner sync.WaitGroup
				for w := range writers {
					inner.Go(func() {
						for n := range lines {
							l.Printf("w%d n%d\nsecond", w, n)
						}
					})
				}
				inner.Wait()
				return nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			var got []string
			if err := e.m.Follow(context.Background(), upid.String(), 0, func(l string) error {
				got = append(got, l)
				return nil
			}); err != nil {
				t.Error(err)
				return
			}
			if want := writers*lines*2 + 1; len(got) != want || got[len(got)-1] != "TASK OK" {
				t.Errorf("%s: followed %d lines ending %q, want %d ending TASK OK", upid, len(got), got[len(got)-1], want)
			}
			// Each Printf's two lines stay together.
			for j := 0; j+1 < len(got)-1; j += 2 {
				if !strings.HasPrefix(got[j], "w") || got[j+1] != "second" {
					t.Errorf("%s: lines %d-%d = %q, %q: interleaved", upid, j, j+1, got[j], got[j+1])
					break
				}
			}
			_, _ = e.m.List(context.Background(), task.Filter{Running: true})
			_ = e.m.Running()
		})
	}
	wg.Wait()
}

func TestNewManagerErrors(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dir := t.TempDir()
	tests := []struct {
		name   string
		st     store.Store
		logDir string
		node   string
		opts   task.Options
	}{
		{"nil store", nil, dir, "pve1", task.Options{}},
		{"no log dir", st, "", "pve1", task.Options{}},
		{"bad node", st, dir, "pve_1", task.Options{}},
		{"node with colon", st, dir, "a:b", task.Options{}},
		{"negative count", st, dir, "pve1", task.Options{MaxCount: -1}},
		{"negative age", st, dir, "pve1", task.Options{MaxAge: -time.Hour}},
	}
	for _, tt := range tests {
		if m, err := task.NewManager(tt.st, tt.logDir, tt.node, nil, tt.opts); err == nil {
			t.Errorf("%s: NewManager succeeded: %v", tt.name, m)
		}
	}
}

// TestFollowBatches checks that flush comes after each batch of lines of a
// running task, once every line written so far was emitted, and never
// after the last line; that the task's final entry is readable as soon as
// the follower sees the end; and that a follower of an ended task gets all
// lines without a flush.
func TestFollowBatches(t *testing.T) {
	e := newEnv(t, task.Options{})
	step := make(chan struct{})
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error {
		l.Printf("one\ntwo")
		<-step
		l.Println("three")
		<-step
		return nil
	})
	events := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- e.m.FollowBatches(context.Background(), upid, 0, func(line string) error {
			events <- line
			return nil
		}, func() error {
			events <- "FLUSH"
			return nil
		})
	}()
	expect := func(want ...string) {
		t.Helper()
		for _, w := range want {
			select {
			case got := <-events:
				if got != w {
					t.Fatalf("got %q, want %q", got, w)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no %q", w)
			}
		}
	}
	expect("one", "two", "FLUSH")
	step <- struct{}{}
	expect("three", "FLUSH")
	step <- struct{}{}
	expect("TASK OK")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FollowBatches did not return after the task ended")
	}
	if len(events) != 0 {
		t.Errorf("extra events after the last line: %q", <-events)
	}
	// The follower saw the end, so the final entry is there at once.
	if tk, err := e.m.Get(context.Background(), upid); err != nil || tk.Status != api.TaskStopped || tk.ExitStatus != api.TaskOK {
		t.Errorf("Get right after the follower returned = %+v, %v; want stopped OK", tk, err)
	}
	var lines []string
	if err := e.m.FollowBatches(context.Background(), upid, 1, func(l string) error {
		lines = append(lines, l)
		return nil
	}, func() error { t.Error("flush called for an ended task"); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(lines, "|"); got != "two|three|TASK OK" {
		t.Errorf("lines of the ended task from line 1: %q", got)
	}
}

// spares returns the spare log files in dir.
func spares(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".spare-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSpareLogs checks the spare log files: tasks get their logs renamed
// from spares created in the background (the second task on, once the
// first started the refill), a spare never replaces an existing log, a log
// subdirectory removed behind the Manager's back is made again, Shutdown
// removes the spares, and a new Manager removes the spares a crashed one
// left while Recover ignores them.
func TestSpareLogs(t *testing.T) {
	c := newClock(time.Unix(1_700_000_000, 0))
	e := newEnv(t, task.Options{Now: c.Now})
	ok := func(context.Context, *task.Log) error { return nil }
	e.wait(t, e.start(t, spec, ok))
	deadline := time.Now().Add(10 * time.Second)
	for len(spares(t, e.logDir)) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(spares(t, e.logDir)); n != 2 {
		t.Fatalf("%d spare logs after the first task, want 2", n)
	}
	before := spares(t, e.logDir)
	upid := e.start(t, spec, func(ctx context.Context, l *task.Log) error { l.Println("from a spare"); return nil })
	e.wait(t, upid)
	if diff := cmp.Diff([]string{"from a spare", "TASK OK"}, e.logLines(t, upid)); diff != "" {
		t.Errorf("log of a task on a spare (-want +got):\n%s", diff)
	}
	u, err := task.ParseUPID(upid)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(logFile(e.logDir, u))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("log file: %v, %v; want mode 0640", fi, err)
	}
	used := 0
	for _, p := range before {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			used++
		}
	}
	if used != 1 {
		t.Errorf("%d of the spares were used by one task, want 1", used)
	}

	// An existing log at the next UPID is kept and the UPID skipped.
	next := task.UPID{Node: "pve1", PID: u.PID, PStart: u.PStart, StartTime: u.StartTime + 1, Type: spec.Type, ID: spec.ID, User: spec.User}
	if err := os.MkdirAll(filepath.Dir(logFile(e.logDir, next)), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logFile(e.logDir, next), []byte("someone else's\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	got := e.start(t, spec, ok)
	e.wait(t, got)
	if got == next.String() {
		t.Errorf("task got the UPID of an existing log")
	}
	if b, _ := os.ReadFile(logFile(e.logDir, next)); string(b) != "someone else's\n" {
		t.Errorf("existing log now holds %q", b)
	}

	// A removed subdirectory is made again.
	for i := 0; i < 16; i++ {
		if err := os.RemoveAll(filepath.Join(e.logDir, fmt.Sprintf("%X", i))); err != nil {
			t.Fatal(err)
		}
	}
	e.wait(t, e.start(t, spec, ok))

	if err := e.m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := spares(t, e.logDir); len(s) != 0 {
		t.Errorf("spares left after Shutdown: %v", s)
	}

	// A crashed daemon's spares: removed, never indexed.
	stale := filepath.Join(e.logDir, ".spare-1-2-3")
	if err := os.WriteFile(stale, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	m2, err := task.NewManager(e.st, e.logDir, "pve1", testLogger(t), task.Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale spare not removed: %v", err)
	}
	if n, err := m2.Recover(context.Background()); err != nil || n != 0 {
		t.Errorf("Recover after the spares = %d, %v; want 0, nil", n, err)
	}
}

// TestGroupCommit checks the delayed, batched commit of ended tasks: until
// it, Get, List and Wait answer from memory and the index holds nothing; a
// crash in that window (a copy of the data directory taken then) leaves
// logs that Recover indexes with their real exit status; Shutdown commits
// at once, several tasks in one batch.
func TestGroupCommit(t *testing.T) {
	e := newEnv(t, task.Options{CommitDelay: time.Hour})
	ctx := context.Background()
	var upids []string
	for i, fail := range []bool{false, true, false} {
		upids = append(upids, e.start(t, task.Spec{Type: "vzstart", ID: strconv.Itoa(100 + i), User: "root@pam"},
			func(context.Context, *task.Log) error {
				if fail {
					return errors.New("no such device")
				}
				return nil
			}))
	}
	for _, u := range upids {
		e.wait(t, u)
	}
	want := map[string]string{upids[0]: api.TaskOK, upids[1]: "no such device", upids[2]: api.TaskOK}
	for _, u := range upids {
		tk, err := e.m.Get(ctx, u)
		if err != nil || tk.Status != api.TaskStopped || tk.ExitStatus != want[u] {
			t.Errorf("Get(%s) before the commit = %+v, %v", u, tk, err)
		}
	}
	if ts, err := e.m.List(ctx, task.Filter{}); err != nil || len(ts) != 3 {
		t.Errorf("List before the commit = %d tasks, %v; want 3", len(ts), err)
	}
	if objs, err := e.st.List(ctx, task.KeyPrefix); err != nil || len(objs) != 0 {
		t.Fatalf("index before the commit holds %d entries (%v), want none", len(objs), err)
	}

	// A crash now: what is on disk is a store without the entries and the
	// logs. A daemon started on it indexes them from the logs.
	crash := t.TempDir()
	copyTree(t, filepath.Dir(e.dbPath), crash)
	st2, err := store.Open(filepath.Join(crash, filepath.Base(e.dbPath)))
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	m2, err := task.NewManager(st2, filepath.Join(crash, filepath.Base(e.logDir)), "pve1", testLogger(t), task.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := m2.Recover(ctx); err != nil || n != 3 {
		t.Errorf("Recover after the crash = %d, %v; want 3", n, err)
	}
	for _, u := range upids {
		tk, err := m2.Get(ctx, u)
		if err != nil || tk.Status != api.TaskStopped || tk.ExitStatus != want[u] {
			t.Errorf("recovered %s = %+v, %v; want exit status %q", u, tk, err, want[u])
		}
	}
	if err := m2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// Shutdown does not wait an hour: it commits at once.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.m.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range upids {
		pu, _ := task.ParseUPID(u)
		tk, _, err := store.GetJSON[api.Task](ctx, e.st, fmt.Sprintf("tasks/%016X-%s", pu.StartTime, u))
		if err != nil || tk.ExitStatus != want[u] {
			t.Errorf("index entry of %s after Shutdown = %+v, %v", u, tk, err)
		}
	}
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o750)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o640)
	})
	if err != nil {
		t.Fatal(err)
	}
}
