package hostnet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/atomicfile"
	"github.com/berthhq/berth/internal/ifupdown"
	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/task"
)

// Store keys.
const (
	keyStaged  = "hostnet/staged"  // stagedRecord: what interfaces.new was based on
	keyApplied = "hostnet/applied" // appliedRecord: the content applied last
	keyPending = "hostnet/pending" // pendingRecord: an apply not yet confirmed
)

// DefaultInterfaces is the real file.
const DefaultInterfaces = "/etc/network/interfaces"

// Options configure a Manager.
type Options struct {
	// Interfaces is the main file (DefaultInterfaces); staged changes go
	// to Interfaces + ".new".
	Interfaces string
	// NetNS names a network namespace (as ip netns does) to configure
	// instead of the daemon's own; for tests.
	NetNS string
	// Helper is the command that runs RunHelper (berth hostnet-helper).
	Helper []string
	Store  store.Store
	Tasks  *task.Manager
	Log    *slog.Logger
}

// Manager stages, applies, confirms and rolls back network changes.
type Manager struct {
	o     Options
	mu    sync.Mutex
	busy  bool // an apply or rollback task runs
	timer *time.Timer
	// curUPID is the UPID of the running apply.
	curUPID string
}

type stagedRecord struct {
	// Base is the digest of the active file when staging began.
	Base string `json:"base"`
}

type appliedRecord struct {
	Content []byte `json:"content"`
}

type pendingRecord struct {
	State    string `json:"state"` // applying, pending
	Deadline int64  `json:"deadline"`
	UPID     string `json:"upid"`
	// Prev is the active file before the apply, PrevApplied the
	// configuration live before it; New the applied content.
	Prev        []byte `json:"prev"`
	PrevApplied []byte `json:"prev_applied,omitempty"`
	New         []byte `json:"new"`
	// Staged is the staged file the apply consumed (restored on
	// rollback so no edit is lost).
	Staged bool `json:"staged"`
}

// New returns a Manager.
func New(o Options) *Manager {
	if o.Interfaces == "" {
		o.Interfaces = DefaultInterfaces
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{o: o}
}

// Digest is the SHA-256 of a file's content, hex.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (m *Manager) stagedPath() string { return m.o.Interfaces + ".new" }

// read returns a file's content; a missing file reads as empty.
func read(p string) ([]byte, bool, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", p, err)
	}
	return b, true, nil
}

// files reads the active file and the staged one (has: it exists). A
// missing file reads as empty (non-nil: ifupdown.Load takes nil as "read
// it from disk").
func (m *Manager) files() (cur, staged []byte, has bool, err error) {
	if cur, _, err = read(m.o.Interfaces); err != nil {
		return nil, nil, false, err
	}
	staged, has, err = read(m.stagedPath())
	if cur == nil {
		cur = []byte{}
	}
	if staged == nil {
		staged = []byte{}
	}
	return cur, staged, has, err
}

// WriteAtomic writes a file through a temporary file, fsync and rename,
// so that a crash leaves the old or the new content, never a mix.
func WriteAtomic(p string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, data, mode)
}

// handle opens netlink in the managed namespace without switching any
// daemon thread for longer than the socket's creation.
func (m *Manager) handle() (*netlink.Handle, error) {
	if m.o.NetNS == "" {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	ns, err := netns.GetFromName(m.o.NetNS)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", m.o.NetNS, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
}

// liveLinks lists the managed namespace's links: name → up.
func (m *Manager) liveLinks() (map[string]bool, error) {
	h, err := m.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[string]bool{}
	for _, l := range ls {
		out[l.Attrs().Name] = l.Attrs().Flags&net.FlagUp != 0
	}
	return out, nil
}

func names(up map[string]bool) map[string]bool {
	out := make(map[string]bool, len(up))
	for n := range up {
		out[n] = true
	}
	return out
}

// Get shows the configuration: the staged file's interfaces when changes
// are staged, else the active file's.
func (m *Manager) Get(ctx context.Context) (wire.NetworkConfig, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.get(ctx)
}

func (m *Manager) get(ctx context.Context) (wire.NetworkConfig, error) {
	cur, staged, has, err := m.files()
	if err != nil {
		return wire.NetworkConfig{}, err
	}
	out := wire.NetworkConfig{Path: m.o.Interfaces, Digest: Digest(cur), Interfaces: []wire.NetworkInterface{}}
	show := cur
	if has {
		out.StagedDigest, out.Changes = Digest(staged), true
		show = staged
		if rec, _, err := store.GetJSON[stagedRecord](ctx, m.o.Store, keyStaged); err == nil && rec.Base != out.Digest {
			out.Stale = true
		}
	}
	if p, _, err := store.GetJSON[pendingRecord](ctx, m.o.Store, keyPending); err == nil {
		out.Rollback = &wire.NetworkRollback{State: p.State, Deadline: p.Deadline, UPID: p.UPID}
	}
	c, err := ifupdown.Load(ifupdown.OS, m.o.Interfaces, show)
	if err != nil {
		return out, err
	}
	live, _ := m.liveLinks()
	for _, i := range c.Ifaces {
		out.Interfaces = append(out.Interfaces, describe(i, live))
	}
	return out, nil
}

func describe(i *ifupdown.Iface, live map[string]bool) wire.NetworkInterface {
	f, line := i.Line()
	w := wire.NetworkInterface{Name: i.Name, Type: i.Type(), Auto: i.Auto, Hotplug: i.Hotplug,
		Method: i.Method("inet"), Method6: i.Method("inet6"), Active: live[i.Name], File: f, Line: line}
	addrs, _ := i.Addresses()
	for _, a := range addrs {
		w.Addresses = append(w.Addresses, a.String())
	}
	for _, s := range i.Stanzas {
		for _, o := range s.Options() {
			if o.Key == "gateway" {
				if s.Family == "inet6" || strings.Contains(o.Value, ":") {
					w.Gateway6 = o.Value
				} else {
					w.Gateway = o.Value
				}
			}
		}
	}
	if v, ok := i.Get("mtu"); ok {
		fmt.Sscan(v, &w.MTU)
	}
	switch w.Type {
	case ifupdown.TypeBridge:
		w.Ports = i.Ports()
		w.VLANAware, _ = ifupdown.ParseBool(valueOr(i, "bridge-vlan-aware", "no"))
	case ifupdown.TypeBond:
		w.Slaves = i.Slaves()
		w.BondMode, _ = ifupdown.BondMode(valueOr(i, "bond-mode", "balance-rr"))
	case ifupdown.TypeVLAN:
		w.VLANRawDevice, w.VLANID, _ = i.VLAN()
	}
	for _, o := range i.Options() {
		w.Options = append(w.Options, wire.NetworkOption{Key: o.Key, Value: o.Value})
	}
	return w
}

// Diff returns the unified diff from the active file to the staged one
// ("" when nothing is staged).
func (m *Manager) Diff(ctx context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, staged, has, err := m.files()
	if err != nil || !has {
		return "", err
	}
	return UnifiedDiff(m.o.Interfaces, m.stagedPath(), cur, staged), nil
}

// Edit applies fn to the staged file (created from the active one) and
// keeps the result if the whole configuration validates. digest, when
// set, must match what the caller saw.
func (m *Manager) Edit(ctx context.Context, digest string, fn func(f *ifupdown.File) error) (wire.NetworkConfig, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, staged, has, err := m.files()
	if err != nil {
		return wire.NetworkConfig{}, err
	}
	base := cur
	if has {
		base = staged
	}
	if digest != "" && digest != Digest(base) {
		return wire.NetworkConfig{}, fmt.Errorf("network configuration: %w", store.ErrConflict)
	}
	f, err := ifupdown.Parse(m.o.Interfaces, base)
	if err != nil {
		return wire.NetworkConfig{}, err
	}
	if err := fn(f); err != nil {
		return wire.NetworkConfig{}, err
	}
	next := append([]byte{}, f.Bytes()...)
	c, err := ifupdown.Load(ifupdown.OS, m.o.Interfaces, next)
	if err != nil {
		return wire.NetworkConfig{}, err
	}
	live, err := m.liveLinks()
	if err != nil {
		return wire.NetworkConfig{}, err
	}
	if err := ifupdown.Validate(c, names(live)); err != nil {
		return wire.NetworkConfig{}, err
	}
	if bytes.Equal(next, cur) {
		// Back to the active file: nothing is staged any more.
		if err := m.dropStaged(ctx); err != nil {
			return wire.NetworkConfig{}, err
		}
		return m.get(ctx)
	}
	if !has {
		if _, err := store.PutJSON(ctx, m.o.Store, keyStaged, stagedRecord{Base: Digest(cur)}, store.Cond{}); err != nil {
			return wire.NetworkConfig{}, err
		}
	}
	if err := WriteAtomic(m.stagedPath(), next, 0o644); err != nil {
		return wire.NetworkConfig{}, fmt.Errorf("write %s: %w", m.stagedPath(), err)
	}
	m.o.Log.Info("network change staged", "file", m.stagedPath())
	return m.get(ctx)
}

func (m *Manager) dropStaged(ctx context.Context) error {
	if err := os.Remove(m.stagedPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := m.o.Store.Delete(ctx, keyStaged, store.Cond{}); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// Revert drops the staged changes.
func (m *Manager) Revert(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, has, err := read(m.stagedPath()); err != nil {
		return err
	} else if !has {
		return fmt.Errorf("no staged network changes to revert: %w", store.ErrNotFound)
	}
	m.o.Log.Info("staged network changes reverted")
	return m.dropStaged(ctx)
}

// conflict is a 409 with its own message.
type conflict struct{ msg string }

func (e *conflict) Error() string                         { return e.msg }
func (e *conflict) StatusCode() (status int, code string) { return 409, "conflict" }

// Apply validates what is to be applied (the staged file, else the active
// one after manual edits) and starts the apply task. rollbackAfter > 0
// arms an automatic rollback unless Confirm comes in time.
func (m *Manager) Apply(ctx context.Context, user string, req wire.NetworkApplyRequest, rollbackAfter time.Duration) (task.UPID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.busy {
		return task.UPID{}, &conflict{"a network apply or rollback is running: wait for it to finish"}
	}
	if p, _, err := store.GetJSON[pendingRecord](ctx, m.o.Store, keyPending); err == nil && !req.DryRun {
		return task.UPID{}, &conflict{fmt.Sprintf("the last apply (%s) waits for confirmation: run 'berth net confirm', or wait for its rollback", p.UPID)}
	}
	cur, staged, has, err := m.files()
	if err != nil {
		return task.UPID{}, err
	}
	target := cur
	if has {
		target = staged
		rec, _, err := store.GetJSON[stagedRecord](ctx, m.o.Store, keyStaged)
		if err == nil && rec.Base != Digest(cur) && req.Digest != Digest(cur) {
			return task.UPID{}, &conflict{fmt.Sprintf("%s was edited by hand after the changes were staged: check 'berth net diff', then revert and redo the changes, or apply anyway with --digest %s", m.o.Interfaces, Digest(cur))}
		}
	} else if req.Digest != "" && req.Digest != Digest(cur) {
		return task.UPID{}, fmt.Errorf("network configuration: %w", store.ErrConflict)
	}
	c, err := ifupdown.Load(ifupdown.OS, m.o.Interfaces, target)
	if err != nil {
		return task.UPID{}, err
	}
	live, err := m.liveLinks()
	if err != nil {
		return task.UPID{}, err
	}
	if err := ifupdown.Validate(c, names(live)); err != nil {
		return task.UPID{}, err
	}
	prevApplied := cur
	if a, _, err := store.GetJSON[appliedRecord](ctx, m.o.Store, keyApplied); err == nil {
		prevApplied = a.Content
	}
	if req.DryRun {
		return m.o.Tasks.Start(task.Spec{Type: "netplan", User: user}, func(ctx context.Context, l *task.Log) error {
			return m.runHelper(ctx, HelperRequest{Path: m.o.Interfaces, Cur: target, Prev: prevApplied, DryRun: true}, l)
		})
	}
	m.busy = true
	u, err := m.o.Tasks.Start(task.Spec{Type: "netapply", User: user}, func(ctx context.Context, l *task.Log) error {
		return m.apply(ctx, l, cur, target, prevApplied, has, rollbackAfter)
	})
	if err != nil {
		m.busy = false
	}
	m.curUPID = u.String()
	return u, err
}

func (m *Manager) apply(ctx context.Context, l *task.Log, cur, target, prevApplied []byte, staged bool, rollbackAfter time.Duration) error {
	defer func() {
		m.mu.Lock()
		m.busy = false
		m.mu.Unlock()
	}()
	rec := pendingRecord{State: "applying", Prev: cur, PrevApplied: prevApplied, New: target, Staged: staged}
	if rollbackAfter > 0 {
		rec.Deadline = time.Now().Add(rollbackAfter).Unix()
	}
	// Record first: a crash from here on is rolled back at the next start.
	if _, err := store.PutJSON(ctx, m.o.Store, keyPending, rec, store.Cond{}); err != nil {
		return fmt.Errorf("record the apply: %w", err)
	}
	if staged {
		l.Printf("moving %s into place", m.stagedPath())
		if err := WriteAtomic(m.o.Interfaces, target, 0o644); err != nil {
			m.o.Store.Delete(context.WithoutCancel(ctx), keyPending, store.Cond{})
			return fmt.Errorf("write %s: %w", m.o.Interfaces, err)
		}
		if err := m.dropStaged(ctx); err != nil {
			l.Printf("warning: %v", err)
		}
	}
	l.Printf("applying %s live", m.o.Interfaces)
	err := m.runHelper(ctx, HelperRequest{Path: m.o.Interfaces, Cur: target, Prev: prevApplied}, l)
	if err != nil {
		l.Printf("apply failed: %v", err)
		l.Printf("restoring the previous configuration")
		if rerr := m.restore(context.WithoutCancel(ctx), l, rec); rerr != nil {
			return fmt.Errorf("%w; restoring the previous configuration failed too: %v", err, rerr)
		}
		return err
	}
	if _, err := store.PutJSON(ctx, m.o.Store, keyApplied, appliedRecord{Content: target}, store.Cond{}); err != nil {
		return err
	}
	if rollbackAfter <= 0 {
		l.Printf("network configuration applied")
		return m.o.Store.Delete(ctx, keyPending, store.Cond{})
	}
	rec.State = "pending"
	m.mu.Lock()
	rec.UPID = m.curUPID
	m.mu.Unlock()
	if _, err := store.PutJSON(ctx, m.o.Store, keyPending, rec, store.Cond{}); err != nil {
		return err
	}
	m.mu.Lock()
	m.arm(time.Until(time.Unix(rec.Deadline, 0)))
	m.mu.Unlock()
	l.Printf("applied; it is rolled back at %s unless confirmed: run 'berth net confirm' within %s", time.Unix(rec.Deadline, 0).Format(time.RFC3339), rollbackAfter)
	return nil
}

// restore writes back the file from before the apply and applies it live;
// staged edits that the apply consumed go back to interfaces.new.
func (m *Manager) restore(ctx context.Context, l *task.Log, rec pendingRecord) error {
	if err := WriteAtomic(m.o.Interfaces, rec.Prev, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", m.o.Interfaces, err)
	}
	if rec.Staged {
		if _, has, _ := read(m.stagedPath()); !has {
			if err := WriteAtomic(m.stagedPath(), rec.New, 0o644); err == nil {
				store.PutJSON(ctx, m.o.Store, keyStaged, stagedRecord{Base: Digest(rec.Prev)}, store.Cond{})
				l.Printf("the rolled back changes are kept in %s", m.stagedPath())
			}
		}
	}
	err := m.runHelper(ctx, HelperRequest{Path: m.o.Interfaces, Cur: rec.Prev, Prev: rec.New}, l)
	if err == nil {
		_, err = store.PutJSON(ctx, m.o.Store, keyApplied, appliedRecord{Content: rec.Prev}, store.Cond{})
	}
	if derr := m.o.Store.Delete(ctx, keyPending, store.Cond{}); derr != nil && !errors.Is(derr, store.ErrNotFound) && err == nil {
		err = derr
	}
	return err
}

// arm schedules the rollback; the caller holds m.mu.
func (m *Manager) arm(d time.Duration) {
	if m.timer != nil {
		m.timer.Stop()
	}
	m.timer = time.AfterFunc(max(d, 0), func() {
		_, err := m.Rollback("rollback-after expired")
		var busy *conflict
		switch {
		case errors.As(err, &busy):
			// The deadline passed while the apply task was still
			// finishing (a slow apply on a loaded host): try again
			// shortly instead of leaving the change pending forever.
			m.mu.Lock()
			m.arm(time.Second)
			m.mu.Unlock()
		case err != nil:
			m.o.Log.Error("network rollback", "err", err)
		}
	})
}

// Confirm keeps an applied change that waits for confirmation.
func (m *Manager) Confirm(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, digest, err := store.GetJSON[pendingRecord](ctx, m.o.Store, keyPending)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no applied network change waits for confirmation: %w", store.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if p.State != "pending" || m.busy {
		return &conflict{"the network apply is still running: confirm once it has finished"}
	}
	if err := m.o.Store.Delete(ctx, keyPending, store.Cond{Digest: digest}); err != nil {
		return err
	}
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	m.o.Log.Info("network change confirmed", "upid", p.UPID)
	return nil
}

// Rollback starts the rollback task of a pending apply now.
func (m *Manager) Rollback(reason string) (task.UPID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ctx := context.Background()
	p, _, err := store.GetJSON[pendingRecord](ctx, m.o.Store, keyPending)
	if err != nil {
		return task.UPID{}, fmt.Errorf("no network change to roll back: %w", err)
	}
	if m.busy {
		return task.UPID{}, &conflict{"a network apply or rollback is running"}
	}
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	m.busy = true
	u, err := m.o.Tasks.Start(task.Spec{Type: "netrollback", User: "root@pam"}, func(ctx context.Context, l *task.Log) error {
		defer func() {
			m.mu.Lock()
			m.busy = false
			m.mu.Unlock()
		}()
		l.Printf("rolling back the network change of %s: %s", p.UPID, reason)
		return m.restore(ctx, l, p)
	})
	if err != nil {
		m.busy = false
	}
	return u, err
}

// Resume runs at daemon start: an apply interrupted by a crash, or one
// whose confirmation deadline passed while the daemon was down, is rolled
// back now; a pending one gets its timer back.
func (m *Manager) Resume(ctx context.Context) error {
	p, _, err := store.GetJSON[pendingRecord](ctx, m.o.Store, keyPending)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case p.State == "applying":
		m.o.Log.Warn("a network apply was interrupted: rolling it back", "upid", p.UPID)
		_, err = m.Rollback("the apply was interrupted (daemon stopped or crashed)")
	case time.Now().Unix() >= p.Deadline:
		m.o.Log.Warn("a network change was not confirmed in time: rolling it back", "upid", p.UPID)
		_, err = m.Rollback("not confirmed before the deadline")
	default:
		m.mu.Lock()
		m.arm(time.Until(time.Unix(p.Deadline, 0)))
		m.mu.Unlock()
		m.o.Log.Info("network change waits for confirmation", "upid", p.UPID, "deadline", time.Unix(p.Deadline, 0))
	}
	return err
}

// Close stops the rollback timer (the record stays for the next start).
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
}

// runHelper runs the apply helper in the managed namespace, its output
// lines into the task log.
func (m *Manager) runHelper(ctx context.Context, req HelperRequest, l *task.Log) error {
	if len(m.o.Helper) == 0 {
		return errors.New("no apply helper configured")
	}
	args := m.o.Helper
	if m.o.NetNS != "" {
		// ip netns exec also mounts that namespace's sysfs.
		args = append([]string{"ip", "netns", "exec", m.o.NetNS}, args...)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = bytes.NewReader(body)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start apply helper %s: %w", args[0], err)
	}
	copyLines(out, l)
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return errors.New(msg)
	}
	return nil
}

func copyLines(r io.Reader, l *task.Log) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.Printf("%s", sc.Text())
	}
}
