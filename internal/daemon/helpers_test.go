package daemon_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/daemon"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/syncbuf"
)

// daemonEnv is one daemon running in-process on a temporary data dir.
type daemonEnv struct {
	dir    string
	base   string // https://127.0.0.1:PORT
	addr   string
	hc     *http.Client
	pool   *x509.CertPool
	admin  string // the init token's secret
	cancel context.CancelFunc
	done   chan error
	log    *syncbuf.Buffer
	// stopped is set once Run returned (by stop or the cleanup).
	stopped bool
	runErr  error
}

var initTokenRE = regexp.MustCompile(`admin API token "root-admin" \(shown once\): (berth\.root-admin\.\S+)\n`)

// shortTempDir returns a fresh directory with a short path: the unix
// socket's path must fit in 108 bytes whatever the test's name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-itest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startDaemon runs daemon.Run on dir and waits until it serves.
func startDaemon(t testing.TB, dir string, drivers ...guest.Driver) *daemonEnv {
	t.Helper()
	e := &daemonEnv{dir: dir, done: make(chan error, 1), log: &syncbuf.Buffer{}}
	var stdout syncbuf.Buffer
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	opts := daemon.Options{
		DataDir:         dir,
		Listen:          "127.0.0.1:0",
		Node:            "itest",
		Version:         "itest-version",
		InitToken:       "root-admin",
		Stdout:          &stdout,
		Log:             slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Drivers:         drivers,
		ShutdownTimeout: 500 * time.Millisecond,
		Ready:           func(addr string) { ready <- addr },
	}
	go func() { e.done <- daemon.Run(ctx, opts) }()
	t.Cleanup(func() {
		e.stop(t)
		if t.Failed() {
			t.Logf("daemon log of %s:\n%s", dir, e.log.String())
		}
	})
	select {
	case e.addr = <-ready:
	case err := <-e.done:
		e.stopped, e.runErr = true, err
		t.Fatalf("daemon.Run returned before it was ready: %v\n%s", err, e.log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon not ready after 60s\n%s", e.log.String())
	}
	if !strings.HasPrefix(e.addr, "127.0.0.1:") || strings.HasSuffix(e.addr, ":0") {
		t.Fatalf("Ready got address %q, want 127.0.0.1:PORT", e.addr)
	}
	e.base = "https://" + e.addr

	m := initTokenRE.FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no admin token on stdout: %q", stdout.String())
	}
	e.admin = m[1]

	caPEM, err := os.ReadFile(filepath.Join(dir, "pki", "berth-root-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	e.pool = x509.NewCertPool()
	if !e.pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("pki/berth-root-ca.pem holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pool, MinVersion: tls.VersionTLS12}}
	e.hc = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return e
}

// stop cancels Run's context and waits for it to return.
func (e *daemonEnv) stop(t testing.TB) error {
	t.Helper()
	if e.stopped {
		return e.runErr
	}
	e.cancel()
	select {
	case e.runErr = <-e.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon.Run did not return 30s after cancel")
	}
	e.stopped = true
	if e.hc != nil {
		e.hc.Transport.(*http.Transport).CloseIdleConnections()
	}
	return e.runErr
}

// Credentials for a request.
type cred func(*http.Request)

func bearer(tok string) cred {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func header(name, value string) cred {
	return func(r *http.Request) { r.Header.Set(name, value) }
}

func cookie(ticket string) cred {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "BerthAuthCookie", Value: ticket}) }
}

func noCred(*http.Request) {}

type response struct {
	status  int
	header  http.Header
	body    []byte
	trailer http.Header // once the body was read
}

// call makes one request; body is sent as is when it is a string, as JSON
// otherwise, and not at all when nil.
func (e *daemonEnv) call(t *testing.T, method, path string, body any, creds ...cred) response {
	t.Helper()
	return doCall(t, e.hc, e.base, method, path, body, creds...)
}

func doCall(t *testing.T, hc *http.Client, base, method, path string, body any, creds ...cred) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, c := range creds {
		c(req)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b, trailer: resp.Trailer}
}

// data decodes a success envelope strictly: {"data": …} and nothing else.
func data[T any](t *testing.T, r response, wantStatus int) T {
	t.Helper()
	if r.status != wantStatus {
		t.Fatalf("status %d, want %d; body %s", r.status, wantStatus, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	var env wire.Envelope[T]
	if err := dec.Decode(&env); err != nil {
		t.Fatalf("body %s is not a {\"data\": %T} envelope: %v", r.body, env.Data, err)
	}
	return env.Data
}

// apiError checks that r is an error response with status and code, in the
// {"error": {"status", "code", "message"}} shape, and returns the error.
func apiError(t *testing.T, r response, status int, code string) wire.Error {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &top); err != nil {
		t.Fatalf("error body %s is not a JSON object: %v", r.body, err)
	}
	if _, ok := top["error"]; !ok || len(top) != 1 {
		t.Fatalf("error body %s: want exactly one key, \"error\"", r.body)
	}
	dec := json.NewDecoder(bytes.NewReader(top["error"]))
	dec.DisallowUnknownFields()
	var e wire.Error
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error object %s: %v", top["error"], err)
	}
	if e.Status != status || e.Code != code {
		t.Fatalf("error = %d %q (%s), want %d %q", e.Status, e.Code, e.Message, status, code)
	}
	if e.Message == "" {
		t.Errorf("error %s has no message", top["error"])
	}
	return e
}

// createToken makes an API token of role with the admin token.
func (e *daemonEnv) createToken(t *testing.T, name, role string) string {
	t.Helper()
	sec := data[wire.TokenSecret](t, e.call(t, "POST", "/api/v1/access/tokens", wire.TokenCreate{Name: name, Role: role}, bearer(e.admin)), 200)
	if sec.Token.Name != name || sec.Token.Role != role || !strings.HasPrefix(sec.Value, "berth."+name+".") {
		t.Fatalf("token answer %+v", sec)
	}
	return sec.Value
}

// createUser adds a local user with the admin token.
func (e *daemonEnv) createUser(t *testing.T, name, password, role string) {
	t.Helper()
	u := data[wire.User](t, e.call(t, "POST", "/api/v1/access/users", wire.UserCreate{Name: name, Password: password, Role: role}, bearer(e.admin)), 200)
	if u.Name != name || u.Role != role || !u.Enabled {
		t.Fatalf("user answer %+v", u)
	}
}

// waitTask polls a task until it is stopped.
func (e *daemonEnv) waitTask(t *testing.T, upid string, creds ...cred) wire.Task {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tk := data[wire.Task](t, e.call(t, "GET", "/api/v1/tasks/"+upid, nil, creds...), 200)
		if tk.Status == wire.TaskStopped {
			return tk
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still %s after 30s", upid, tk.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeDriver runs "uml" guests in memory. Start blocks while gate is set
// and not closed, after saying so on started.
type fakeDriver struct {
	mu      sync.Mutex
	running map[int]bool
	gate    chan struct{}
	started chan int
}

func newFakeDriver() *fakeDriver {
	return &fakeDriver{running: map[int]bool{}, started: make(chan int, 16)}
}

func (f *fakeDriver) Kind() wire.GuestKind                  { return wire.GuestUML }
func (f *fakeDriver) Validate(wire.Guest) map[string]string { return nil }
func (f *fakeDriver) Create(ctx context.Context, g wire.Guest, l guest.Logger) error {
	l.Printf("fake: provisioned %d", g.ID)
	return nil
}

func (f *fakeDriver) Start(ctx context.Context, g wire.Guest, l guest.Logger) error {
	l.Printf("fake: booting %d", g.ID)
	f.started <- g.ID
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			l.Printf("fake: boot of %d cancelled", g.ID)
			return ctx.Err()
		}
	}
	f.mu.Lock()
	f.running[g.ID] = true
	f.mu.Unlock()
	l.Printf("fake: %d is up", g.ID)
	return nil
}

func (f *fakeDriver) Shutdown(ctx context.Context, g wire.Guest, _ time.Duration, l guest.Logger) error {
	return f.Stop(ctx, g, l)
}

func (f *fakeDriver) Stop(ctx context.Context, g wire.Guest, l guest.Logger) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, g.ID)
	return nil
}

func (f *fakeDriver) Status(ctx context.Context, g wire.Guest) (guest.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running[g.ID] {
		return guest.State{Status: wire.GuestRunning}, nil
	}
	return guest.State{Status: wire.GuestStopped}, nil
}

func (f *fakeDriver) Destroy(context.Context, wire.Guest, guest.Logger) error { return nil }
func (f *fakeDriver) Console(context.Context, wire.Guest) (io.ReadWriteCloser, error) {
	return nil, guest.ErrNotSupported
}

func (f *fakeDriver) Exec(context.Context, wire.Guest, guest.ExecRequest) (int, error) {
	return 0, guest.ErrNotSupported
}

func (f *fakeDriver) Adopt(ctx context.Context, g wire.Guest) (guest.State, error) {
	return f.Status(ctx, g)
}

// createGuest registers guest id (kind uml) and waits for its create task.
func (e *daemonEnv) createGuest(t *testing.T, id int) {
	t.Helper()
	acc := data[wire.Accepted](t, e.call(t, "POST", "/api/v1/guests", wire.Guest{ID: id, Kind: wire.GuestUML}, bearer(e.admin)), 202)
	if tk := e.waitTask(t, acc.UPID, bearer(e.admin)); tk.ExitStatus != wire.TaskOK {
		t.Fatalf("create task of guest %d: %+v", id, tk)
	}
}

var errTimeout = errors.New("timeout")

// recv waits for a value on c.
func recv[T any](c <-chan T, d time.Duration) (T, error) {
	select {
	case v := <-c:
		return v, nil
	case <-time.After(d):
		var zero T
		return zero, errTimeout
	}
}

// runDaemon runs a bare daemon on dir (for tests that expect it to fail).
func runDaemon(ctx context.Context, dir string, ready func(string)) error {
	return daemon.Run(ctx, daemon.Options{
		DataDir: dir, Listen: "127.0.0.1:0", Node: "itest", Version: "itest-version",
		Log: slog.New(slog.DiscardHandler), ShutdownTimeout: time.Second, Ready: ready,
	})
}
