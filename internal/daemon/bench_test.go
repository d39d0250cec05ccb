package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
	"github.com/berthhq/berth/internal/guest"
)

// benchCT is a container driver whose operations cost nothing: what
// BenchmarkTaskRoundTrip measures is berth's own work around a driver call
// (HTTP, authentication, the registry, the task's log, index and stream).
// Start and Stop log one line each, as the real driver does.
type benchCT struct{ *fakeDriver }

func (benchCT) Kind() wire.GuestKind { return wire.GuestContainer }
func (d benchCT) Start(ctx context.Context, g wire.Guest, l guest.Logger) error {
	d.mu.Lock()
	d.running[g.ID] = true
	d.mu.Unlock()
	l.Printf("container %d started", g.ID)
	return nil
}

func (d benchCT) Stop(ctx context.Context, g wire.Guest, l guest.Logger) error {
	_ = d.fakeDriver.Stop(ctx, g, l)
	l.Printf("container %d stopped", g.ID)
	return nil
}

// Exec fails like the real driver, before it touches the command's
// stdio, when the container is not running or argv[0] is "fail"; "cat"
// copies stdin to stdout and exits with 7; anything else exits with 0.
func (d benchCT) Exec(ctx context.Context, g wire.Guest, req guest.ExecRequest) (int, error) {
	d.mu.Lock()
	running := d.running[g.ID]
	d.mu.Unlock()
	switch {
	case !running:
		return 0, fmt.Errorf("container %d is not running: start it first", g.ID)
	case req.Argv[0] == "fail":
		return 0, errors.New("exec failed before the command started")
	case req.Argv[0] == "cat":
		if req.Stdin != nil { // nil: /dev/null
			if _, err := io.Copy(req.Stdout, req.Stdin); err != nil {
				return 0, err
			}
		}
		fmt.Fprint(req.Stderr, "done")
		return 7, nil
	}
	return 0, nil
}
func (benchCT) Suspend(context.Context, wire.Guest, guest.Logger) error { return nil }
func (benchCT) Resume(context.Context, wire.Guest, guest.Logger) error  { return nil }
func (benchCT) Reboot(context.Context, wire.Guest, time.Duration, guest.Logger) error {
	return nil
}
func (benchCT) Snapshots(int) ([]wire.ContainerSnapshot, error) { return nil, nil }
func (benchCT) Snapshot(context.Context, wire.Guest, string, string, guest.Logger) error {
	return nil
}
func (benchCT) Rollback(context.Context, wire.Guest, string, guest.Logger) error { return nil }
func (benchCT) DeleteSnapshot(context.Context, wire.Guest, string, guest.Logger) error {
	return nil
}
func (benchCT) Clone(context.Context, wire.Guest, wire.Guest, guest.Logger) error { return nil }
func (benchCT) ConsoleLog(int, int) ([]byte, error)                               { return nil, nil }

// BenchmarkTaskRoundTrip measures ctbench's container cycle (start task,
// exec, stop task) through the daemon's unix socket and the Go client, with
// a driver that takes no time: each step's time is berth's overhead outside
// the driver. It reports each step's mean as start-ms, exec-ms and stop-ms.
//
//	sudo go test -run '^$' -bench TaskRoundTrip -benchtime 500x ./internal/daemon/
func BenchmarkTaskRoundTrip(b *testing.B) {
	const id = 1000
	cl := fakeCTDaemon(b, id)
	ctx := context.Background()
	p := "/api/v1/guests/" + strconv.Itoa(id) + "/status/"
	var start, exec, stop time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if err := benchTask(ctx, cl, "POST", p+"start", nil); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		code, err := cl.ContainerExec(ctx, id, wire.ContainerExecRequest{Argv: []string{"/bin/true"}}, client.ExecIO{})
		if err != nil || code != 0 {
			b.Fatalf("exec: code %d, %v", code, err)
		}
		t2 := time.Now()
		if err := benchTask(ctx, cl, "POST", p+"stop", nil); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		start += t1.Sub(t0)
		exec += t2.Sub(t1)
		stop += t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(start.Microseconds())/1000/n, "start-ms")
	b.ReportMetric(float64(exec.Microseconds())/1000/n, "exec-ms")
	b.ReportMetric(float64(stop.Microseconds())/1000/n, "stop-ms")
}

// benchTask starts a task as ctbench does (and the CLI: one request that
// follows the task) and waits for its final status.
func benchTask(ctx context.Context, cl *client.Client, method, path string, body any) error {
	t, err := cl.RunTask(ctx, method, path, body, nil)
	if err != nil {
		return err
	}
	if t.ExitStatus != wire.TaskOK {
		return &wire.Error{Status: 500, Code: "task", Message: method + " " + path + ": " + t.ExitStatus}
	}
	return nil
}

// fakeCTDaemon starts a daemon whose container driver is benchCT, creates
// container id and returns a client on the unix socket, which needs root.
func fakeCTDaemon(tb testing.TB, id int) *client.Client {
	cl, _ := fakeCTDaemonSocket(tb, id)
	return cl
}

// fakeCTDaemonSocket is fakeCTDaemon that also returns the socket's path.
func fakeCTDaemonSocket(tb testing.TB, id int) (*client.Client, string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("the unix socket grants admin to root peers only; run as root")
	}
	e := startDaemon(tb, shortTempDir(tb), benchCT{newFakeDriver()})
	sock := filepath.Join(e.dir, "berth.sock")
	cl := client.NewUnix(sock)
	if err := benchTask(context.Background(), cl, "POST", "/api/v1/guests", wire.Guest{ID: id, Kind: wire.GuestContainer}); err != nil {
		tb.Fatal(err)
	}
	return cl, sock
}
