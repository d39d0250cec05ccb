package container_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/guest/container"
	"github.com/berthhq/berth/internal/guest/container/cttest"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/store"
)

func TestMain(m *testing.M) {
	cttest.Helper()
	testscript.Main(m, map[string]func(){"berth": berthMain})
}

// env is a real driver on a temporary data dir with the idle busybox
// image imported as "bb".
type env struct {
	t   *testing.T
	d   *container.Driver
	st  store.Store
	img *image.Store
	dir string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cttest.RequireRoot(t)
	dir := t.TempDir()
	// The id ranges must be able to traverse the data dir.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	imgs, err := image.Open(ctx, st, filepath.Join(dir, "images"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cttest.ImportBusybox(ctx, imgs, "bb", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d, err := container.New(container.Options{DataDir: dir, Store: st, Images: imgs, Self: self})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return &env{t: t, d: d, st: st, img: imgs, dir: dir}
}

func (e *env) create(id int, cfg map[string]string) api.Guest {
	e.t.Helper()
	if cfg == nil {
		cfg = map[string]string{}
	}
	if cfg["image"] == "" {
		cfg["image"] = "bb"
	}
	g := api.Guest{ID: id, Kind: api.GuestContainer, Config: cfg}
	if bad := e.d.Validate(g); bad != nil {
		e.t.Fatalf("Validate: %v", bad)
	}
	if err := e.d.Create(context.Background(), g, cttest.Logger{T: e.t}); err != nil {
		e.t.Fatalf("Create: %v", err)
	}
	e.t.Cleanup(func() {
		_ = e.d.Stop(context.Background(), g, nil)
		_ = e.d.Destroy(context.Background(), g, nil)
	})
	return g
}

func (e *env) start(g api.Guest) {
	e.t.Helper()
	if err := e.d.Start(context.Background(), g, cttest.Logger{T: e.t}); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
}

// run executes a shell command in g and returns its output and exit code.
func (e *env) run(g api.Guest, script string) (string, int) {
	e.t.Helper()
	var out bytes.Buffer
	code, err := e.d.Exec(context.Background(), g, guest.ExecRequest{Argv: []string{"/bin/sh", "-c", script}, Stdout: &out, Stderr: &out})
	if err != nil {
		e.t.Fatalf("Exec %q: %v", script, err)
	}
	return out.String(), code
}

func (e *env) status(g api.Guest) string {
	e.t.Helper()
	st, err := e.d.Status(context.Background(), g)
	if err != nil {
		e.t.Fatal(err)
	}
	return st.Status
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	g := e.create(101, map[string]string{"hostname": "bbox"})
	if s := e.status(g); s != api.GuestStopped {
		t.Fatalf("status after create = %s", s)
	}
	e.start(g)
	if s := e.status(g); s != api.GuestRunning {
		t.Fatalf("status after start = %s", s)
	}
	out, code := e.run(g, "id -u; hostname; stat -c '%u:%g' /bin/busybox; echo persisted > /root/mark; exit 7")
	if code != 7 {
		t.Errorf("exit code = %d, want 7 (output %q)", code, out)
	}
	if want := "0\nbbox\n0:0\n"; out != want {
		t.Errorf("output = %q, want %q", out, want)
	}
	// The writable layer holds the change, owned by the guest's range.
	fi, err := os.Stat(filepath.Join(e.dir, "containers/101/upper/root/mark"))
	if err != nil {
		t.Fatalf("change not in the writable layer: %v", err)
	}
	if uid := statUID(fi); uid != container.IDMapFirst {
		t.Errorf("file written by guest root has host uid %d, want %d", uid, container.IDMapFirst)
	}
	// The image itself is untouched.
	root, _ := e.img.RootFS("bb")
	if _, err := os.Stat(filepath.Join(root, "root/mark")); err == nil {
		t.Error("guest write reached the shared image")
	}
	if err := e.d.Stop(context.Background(), g, nil); err != nil {
		t.Fatal(err)
	}
	if s := e.status(g); s != api.GuestStopped {
		t.Fatalf("status after stop = %s", s)
	}
	e.start(g)
	if out, _ := e.run(g, "cat /root/mark"); out != "persisted\n" {
		t.Errorf("after restart: %q", out)
	}
	start := time.Now()
	if err := e.d.Shutdown(context.Background(), g, 10*time.Second, cttest.Logger{T: t}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("clean shutdown took %s: busybox init ignored the halt signal", d)
	}
	if s := e.status(g); s != api.GuestStopped {
		t.Fatalf("status after shutdown = %s", s)
	}
	if err := e.d.Destroy(context.Background(), g, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "containers/101")); !os.IsNotExist(err) {
		t.Errorf("destroy left the container dir: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("destroy touched the image: %v", err)
	}
}

func TestExecNotFound(t *testing.T) {
	e := newEnv(t)
	g := e.create(102, nil)
	e.start(g)
	var out bytes.Buffer
	code, err := e.d.Exec(context.Background(), g, guest.ExecRequest{Argv: []string{"no-such-cmd"}, Stderr: &out})
	if err != nil || code != container.ExitNotFound || !strings.Contains(out.String(), "not found") {
		t.Errorf("exec missing command: code %d err %v stderr %q", code, err, out.String())
	}
}

// BenchmarkStartExecStop is the driver's own share of a start cycle:
// start, run /bin/true inside, hard stop (no API, no tasks).
func BenchmarkStartExecStop(b *testing.B) {
	if os.Getenv("BERTH_TEST_ROOT") != "1" {
		b.Skip("needs root and BERTH_TEST_ROOT=1")
	}
	dir := b.TempDir()
	os.Chmod(dir, 0o711)
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	imgs, err := image.Open(ctx, st, filepath.Join(dir, "images"), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := cttest.ImportBusybox(ctx, imgs, "bb", b.TempDir()); err != nil {
		b.Fatal(err)
	}
	self, _ := os.Executable()
	d, err := container.New(container.Options{DataDir: dir, Store: st, Images: imgs, Self: self})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	g := api.Guest{ID: 150, Kind: api.GuestContainer, Config: map[string]string{"image": "bb"}}
	if err := d.Create(ctx, g, cttest.Logger{T: b}); err != nil {
		b.Fatal(err)
	}
	var tStart, tExec, tStop time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := d.Start(ctx, g, nil); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if code, err := d.Exec(ctx, g, guest.ExecRequest{Argv: []string{"/bin/true"}}); err != nil || code != 0 {
			b.Fatal(code, err)
		}
		t2 := time.Now()
		if err := d.Stop(ctx, g, nil); err != nil {
			b.Fatal(err)
		}
		tStart += t1.Sub(t0)
		tExec += t2.Sub(t1)
		tStop += time.Since(t2)
	}
	b.ReportMetric(float64(tStart.Microseconds())/float64(b.N)/1000, "start-ms")
	b.ReportMetric(float64(tExec.Microseconds())/float64(b.N)/1000, "exec-ms")
	b.ReportMetric(float64(tStop.Microseconds())/float64(b.N)/1000, "stop-ms")
}

// TestStartFailureCleansUp: a start that fails inside the helper (no such
// init) reports the cause and leaves no cgroup, pidfile or process.
func TestStartFailureCleansUp(t *testing.T) {
	e := newEnv(t)
	g := e.create(140, map[string]string{"init": "/sbin/no-such-init"})
	err := e.d.Start(context.Background(), g, cttest.Logger{T: t})
	if err == nil || !strings.Contains(err.Error(), "no-such-init") {
		t.Fatalf("Start = %v, want an error naming the missing init", err)
	}
	if s := e.status(g); s != api.GuestStopped {
		t.Errorf("status %s after a failed start", s)
	}
	if _, err := os.Stat(e.d.PidFile(140)); err == nil {
		t.Error("pidfile left after a failed start")
	}
	for _, c := range []string{"memory", "pids", "cpu", "freezer"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c, "berth/140")); err == nil {
			t.Errorf("cgroup %s/berth/140 left after a failed start", c)
		}
	}
	// The container still starts once the cause is fixed.
	g.Config["init"] = "/sbin/init"
	e.start(g)
	if s := e.status(g); s != api.GuestRunning {
		t.Errorf("status %s after fixing the init", s)
	}
}
