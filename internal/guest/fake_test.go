package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

// fakeDriver is a test fake, not a driver: the real container, VM and UML
// drivers come in later issues. It records every call and keeps a per-guest
// status in memory.
type fakeDriver struct {
	kind api.GuestKind

	mu        sync.Mutex
	calls     []string
	status    map[int]string
	failStart map[int]error
	statusErr map[int]error
	// validate, when set, is what Validate returns.
	validate func(api.Guest) map[string]string
	// onShutdown, when set, runs inside Shutdown before it returns.
	onShutdown func(ctx context.Context, g api.Guest) error
	timeouts   map[int]time.Duration
}

func newFake(kind api.GuestKind) *fakeDriver {
	return &fakeDriver{kind: kind, status: map[int]string{}, failStart: map[int]error{},
		statusErr: map[int]error{}, timeouts: map[int]time.Duration{}}
}

func (f *fakeDriver) record(op string, id int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s %d", op, id))
}

// opCalls returns the recorded calls of op, in order.
func (f *fakeDriver) opCalls(op string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		var o string
		var id int
		fmt.Sscanf(c, "%s %d", &o, &id)
		if o == op {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeDriver) Kind() api.GuestKind { return f.kind }

func (f *fakeDriver) Validate(g api.Guest) map[string]string {
	if f.validate != nil {
		return f.validate(g)
	}
	return nil
}

func (f *fakeDriver) Create(ctx context.Context, g api.Guest, log Logger) error {
	f.record("create", g.ID)
	return nil
}

func (f *fakeDriver) Start(ctx context.Context, g api.Guest, log Logger) error {
	f.record("start", g.ID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failStart[g.ID]; err != nil {
		return err
	}
	f.status[g.ID] = api.GuestRunning
	return nil
}

func (f *fakeDriver) Shutdown(ctx context.Context, g api.Guest, timeout time.Duration, log Logger) error {
	f.record("shutdown", g.ID)
	f.mu.Lock()
	f.timeouts[g.ID] = timeout
	f.mu.Unlock()
	if f.onShutdown != nil {
		if err := f.onShutdown(ctx, g); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status[g.ID] = api.GuestStopped
	return nil
}

func (f *fakeDriver) Stop(ctx context.Context, g api.Guest, log Logger) error {
	f.record("stop", g.ID)
	return nil
}

func (f *fakeDriver) Status(ctx context.Context, g api.Guest) (State, error) {
	f.record("status", g.ID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.statusErr[g.ID]; err != nil {
		return State{}, err
	}
	s := f.status[g.ID]
	if s == "" {
		s = api.GuestStopped
	}
	return State{Status: s}, nil
}

func (f *fakeDriver) Destroy(ctx context.Context, g api.Guest, log Logger) error {
	f.record("destroy", g.ID)
	return nil
}

func (f *fakeDriver) Console(ctx context.Context, g api.Guest) (io.ReadWriteCloser, error) {
	return nil, ErrNotSupported
}

func (f *fakeDriver) Exec(ctx context.Context, g api.Guest, req ExecRequest) (int, error) {
	return -1, ErrNotSupported
}

func (f *fakeDriver) Adopt(ctx context.Context, g api.Guest) (State, error) {
	return f.Status(ctx, g)
}

var _ Driver = (*fakeDriver)(nil)

// newTestRegistry opens a real bbolt store in a temporary directory.
func newTestRegistry(t *testing.T, drivers ...Driver) *Registry {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return NewRegistry(st, drivers...)
}

// lines is a Logger that records lines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, fmt.Sprintf(format, args...))
}

func (l *lines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.l...)
}

var errBoom = errors.New("boom")
