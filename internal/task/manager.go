package task

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

// Errors returned by Manager; test them with errors.Is. Unknown tasks are
// reported with an error wrapping store.ErrNotFound, malformed UPIDs with
// one wrapping ErrInvalidUPID.
var (
	// ErrNotRunning means the task exists but is not running in this
	// process, for example because it has already ended.
	ErrNotRunning = errors.New("task is not running")
	// ErrShuttingDown means Shutdown was called and no new task starts.
	ErrShuttingDown = errors.New("task manager is shutting down")
)

// Causes of a task context's cancellation, reported as the task's exit
// status when the task function returns the context's error.
var (
	errInterrupted = errors.New("interrupted by user")
	errShutdown    = errors.New("interrupted by daemon shutdown")
	errGoexit      = errors.New("task function exited without returning")
)

const (
	// KeyPrefix is the store prefix under which the task index lives.
	KeyPrefix = "tasks/"

	// DefaultMaxCount is the number of task index entries kept by default.
	DefaultMaxCount = 1000
	// DefaultMaxAge is how long a finished task is kept by default.
	DefaultMaxAge = 30 * 24 * time.Hour

	// pruneInterval is how often finishing tasks trigger Prune, unless the
	// index holds more than MaxCount entries.
	pruneInterval = time.Minute
	// pruneSlack: tasks that end prune the index once it holds a
	// pruneSlack-th more than MaxCount (1100 for 1000), back to MaxCount:
	// a prune reads the whole index, so pruning at every task end on a
	// node at its limit (the steady state) cost more than the tasks.
	pruneSlack = 10
	// maxStartAttempts bounds the search for an unused UPID.
	maxStartAttempts = 100
)

// Options tunes a Manager. The zero value selects the defaults.
type Options struct {
	// MaxCount is how many index entries Prune keeps (DefaultMaxCount if
	// zero). Running tasks count but are never removed.
	MaxCount int
	// MaxAge is how long after its end a stopped task is kept
	// (DefaultMaxAge if zero).
	MaxAge time.Duration
	// Now returns the current time; time.Now if nil. Tests set it.
	Now func() time.Time
	// CommitDelay is how long the log fsync and index entry of an ended
	// task may wait to be written together with other tasks'
	// (DefaultCommitDelay if zero, none if negative). Shutdown writes
	// what waits at once.
	CommitDelay time.Duration
}

// DefaultCommitDelay is the default Options.CommitDelay.
const DefaultCommitDelay = 50 * time.Millisecond

// Spec names a task to start: the type, id and user fields of its UPID.
// See UPID for the characters allowed in each.
type Spec struct {
	// Type is the kind of work, such as "qmstart" or "aptupdate".
	Type string
	// ID is the object worked on, usually a guest ID; it may be empty.
	ID string
	// User is the user on whose behalf the task runs, such as "root@pam".
	User string
}

// Func is the work of a task. It should return soon after ctx is
// cancelled; returning ctx's error (or one wrapping context.Canceled) then
// records why the task was interrupted, such as "interrupted by user".
type Func func(ctx context.Context, l *Log) error

// Filter selects tasks for List. The zero Filter selects all tasks.
type Filter struct {
	// Errors selects only stopped tasks whose exit status is not "OK".
	Errors bool
	// Running selects only running tasks.
	Running bool
	// GuestID selects only tasks whose ID equals it, if not empty.
	GuestID string
	// Type selects only tasks of this type, if not empty.
	Type string
	// Since and Until bound the start time, both inclusive, to the second;
	// the zero time means unbounded.
	Since, Until time.Time
	// Limit is the maximum number of tasks returned; 0 means all.
	Limit int
}

// Manager starts tasks, records them in the task index, writes their logs
// and keeps the index within its retention limits. It is safe for
// concurrent use.
//
// A daemon creates one Manager per store, calls Recover and then Prune
// before starting any task, and calls Shutdown before closing the store.
type Manager struct {
	st     store.Store
	logDir string
	node   string
	logger *slog.Logger
	opts   Options
	pid    int
	pstart uint64

	pruneMu sync.Mutex    // serialises Prune
	subdirs atomic.Uint32 // bit i: log subdirectory i exists
	wg      sync.WaitGroup

	mu         sync.Mutex
	running    map[string]*run  // by UPID string, until the end is recorded
	lastStart  map[string]int64 // last start time issued per type:id:user
	shutting   bool             // Start refuses new tasks
	cancelAll  bool             // Shutdown cancelled every task
	count      int              // approximate number of index entries
	lastPrune  time.Time
	pending    []*run        // ended tasks waiting for commit
	committing bool          // the commit goroutine runs
	hurry      chan struct{} // closed by Shutdown: commit without delay
	spares     []spare       // log files created ahead of the tasks that get them
	refilling  bool          // a goroutine is creating spares
	noSpares   bool          // renaming spares into place failed once: create logs
}

// spareSeq numbers the spare log files of this process.
var spareSeq atomic.Uint64

// spare is an empty log file created ahead of the task that gets it.
type spare struct {
	f    *os.File
	path string
}

// run is the state of one task running in this process.
type run struct {
	upid   UPID
	str    string
	key    string
	task   api.Task
	log    *Log
	cancel context.CancelCauseFunc
	done   chan struct{} // closed once the end is recorded in memory
	final  api.Task      // the index entry at the end; set before done is closed
	// indexed is closed once the final index entry is written (or its
	// write failed).
	indexed chan struct{}

	// Guarded by Manager.mu.
	ended         bool // the task function returned
	stopRequested bool
}

// NewManager returns a Manager that keeps its index in st and task logs
// under logDir (created if needed), naming node in every UPID. A nil logger
// discards log output.
func NewManager(st store.Store, logDir, node string, logger *slog.Logger, opts Options) (*Manager, error) {
	if st == nil {
		return nil, errors.New("new task manager: store is nil")
	}
	if logDir == "" {
		return nil, errors.New("new task manager: log directory is empty")
	}
	if err := validNode(node); err != nil {
		return nil, fmt.Errorf("new task manager: %w", err)
	}
	if opts.MaxCount < 0 {
		return nil, fmt.Errorf("new task manager: MaxCount %d is negative", opts.MaxCount)
	}
	if opts.MaxAge < 0 {
		return nil, fmt.Errorf("new task manager: MaxAge %v is negative", opts.MaxAge)
	}
	if opts.MaxCount == 0 {
		opts.MaxCount = DefaultMaxCount
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CommitDelay == 0 {
		opts.CommitDelay = DefaultCommitDelay
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(logDir, 0o750); err != nil {
		return nil, fmt.Errorf("new task manager: create log directory: %w", err)
	}
	pstart, err := processStart()
	if err != nil {
		logger.Warn("cannot read process start time; using 0 in UPIDs", "err", err)
	}
	// Spare log files an earlier daemon left are empty: remove them.
	own := filepath.Join(logDir, fmt.Sprintf(".spare-%d-%d-", os.Getpid(), pstart))
	if stale, err := filepath.Glob(filepath.Join(logDir, spareGlob)); err == nil {
		for _, p := range stale {
			if !strings.HasPrefix(p, own) {
				_ = os.Remove(p)
			}
		}
	}
	return &Manager{
		st:        st,
		logDir:    logDir,
		node:      node,
		logger:    logger,
		opts:      opts,
		pid:       os.Getpid(),
		pstart:    pstart,
		running:   make(map[string]*run),
		lastStart: make(map[string]int64),
		hurry:     make(chan struct{}),
	}, nil
}

// processStart returns the start time of this process in clock ticks since
// boot: field 22 of /proc/self/stat.
func processStart() (uint64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, fmt.Errorf("read process start time: %w", err)
	}
	// Field 2, the command name, is in parentheses and may contain spaces
	// and parentheses itself; the fields after the last ')' start at 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("read process start time: malformed /proc/self/stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, errors.New("read process start time: /proc/self/stat has too few fields")
	}
	v, err := strconv.ParseUint(fields[22-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read process start time: %w", err)
	}
	return v, nil
}

// taskKey is the store key of a task's index entry. The fixed-width start
// time makes keys sort by start time; a UPID holds no '/' or NUL, so the
// key has exactly two valid segments.
func taskKey(u UPID) string {
	return fmt.Sprintf("%s%016X-%s", KeyPrefix, u.StartTime, u.String())
}

// Spare log files. Creating a file costs ext4 about ten times what
// renaming one costs (0.1-0.3 ms against 15 µs on this VM), and a task's
// log must exist before its function runs. So the Manager keeps a few
// empty log files, created by a background goroutine, in the log
// directory under names no UPID can have, and a starting task renames one
// into place (RENAME_NOREPLACE, so an existing log is never replaced, as
// with O_EXCL). A crash may leave spares behind; they are empty, Recover
// ignores them (they are not in a log subdirectory) and NewManager
// removes them.
const (
	spareTarget = 2
	spareGlob   = ".spare-*"
)

// placeSpare renames a spare log file to path and returns it open for
// appending, or nil and no error if no spare is at hand. An existing file
// at path is an error wrapping fs.ErrExist; the spare is kept.
func (m *Manager) placeSpare(path string) (*os.File, error) {
	m.mu.Lock()
	n := len(m.spares)
	if m.noSpares || n == 0 {
		m.refillLocked()
		m.mu.Unlock()
		return nil, nil
	}
	sp := m.spares[n-1]
	m.spares = m.spares[:n-1]
	m.refillLocked()
	m.mu.Unlock()
	err := unix.Renameat2(unix.AT_FDCWD, sp.path, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return sp.f, nil
	case errors.Is(err, unix.EEXIST):
		m.mu.Lock()
		m.spares = append(m.spares, sp)
		m.mu.Unlock()
		return nil, &fs.PathError{Op: "rename", Path: path, Err: err}
	case errors.Is(err, unix.ENOENT):
		// Someone removed the spare: create the log.
		sp.f.Close()
		return nil, nil
	}
	// The file system cannot do it (no RENAME_NOREPLACE): create logs.
	m.logger.Warn("cannot rename a spare task log into place; creating each log instead", "err", err)
	sp.f.Close()
	_ = os.Remove(sp.path)
	m.mu.Lock()
	m.noSpares = true
	m.mu.Unlock()
	return nil, nil
}

// refillLocked starts the goroutine that creates spares, unless it runs,
// enough spares are at hand or the Manager shuts down. The caller holds
// m.mu and, so that Shutdown waits for the goroutine, an m.wg count.
func (m *Manager) refillLocked() {
	if m.refilling || m.shutting || m.noSpares || len(m.spares) >= spareTarget {
		return
	}
	m.refilling = true
	m.wg.Add(1)
	go m.refill()
}

// refill creates spares until there are spareTarget.
func (m *Manager) refill() {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		if m.shutting || m.noSpares || len(m.spares) >= spareTarget {
			m.refilling = false
			m.mu.Unlock()
			return
		}
		path := filepath.Join(m.logDir, fmt.Sprintf(".spare-%d-%d-%d", m.pid, m.pstart, spareSeq.Add(1)))
		m.mu.Unlock()
		f, err := openFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
		m.mu.Lock()
		if err != nil {
			m.refilling = false
			m.mu.Unlock()
			m.logger.Warn("cannot create a spare task log; tasks create their logs", "err", err)
			return
		}
		m.spares = append(m.spares, spare{f: f, path: path})
		m.mu.Unlock()
	}
}

// dropSpares closes and removes the spares; Shutdown calls it once no
// goroutine creates more.
func (m *Manager) dropSpares() {
	m.mu.Lock()
	sp := m.spares
	m.spares = nil
	m.mu.Unlock()
	for _, s := range sp {
		s.f.Close()
		_ = os.Remove(s.path)
	}
}

// logSubdir creates the directory of u's log unless this Manager did
// already.
func (m *Manager) logSubdir(u UPID) error {
	bit := uint32(1) << (u.StartTime & 0xF)
	if m.subdirs.Load()&bit != 0 {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(m.logPath(u)), 0o750); err != nil {
		return err
	}
	m.subdirs.Or(bit)
	return nil
}

// openFile is os.OpenFile for a regular file without the attempt to
// register it with the runtime's network poller, which costs several
// system calls and cannot succeed for a regular file.
func openFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	for {
		fd, err := unix.Open(path, flag|unix.O_CLOEXEC, uint32(perm.Perm()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}

// logPath is where a task's log lives: like Proxmox, in a subdirectory
// named after the last hex digit of the start time.
func (m *Manager) logPath(u UPID) string {
	return filepath.Join(m.logDir, fmt.Sprintf("%X", u.StartTime&0xF), u.String())
}

func (m *Manager) now() time.Time { return m.opts.Now() }

// lookup returns the task with this UPID running in this process, or nil.
func (m *Manager) lookup(upid string) *run {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running[upid]
}

// errCollision means the UPID chosen is already taken.
var errCollision = errors.New("UPID already in use")

// Start creates the task's log file, which records the task until its index
// entry is written at its end, and then runs fn in its own goroutine,
// returning the task's UPID. It writes nothing to the store.
//
// UPIDs are unique: a UPID's node, PID and process start time identify
// this process, and within it the start time of tasks with the same type,
// id and user strictly increases. When such a task is started again within
// the same second, its StartTime is the previous one plus one second, so a
// burst of identical tasks gets start times slightly in the future. As a
// safeguard, a UPID whose index entry or log file already exists (say, left
// by an earlier process that had the same PID and start time) is skipped
// the same way.
func (m *Manager) Start(spec Spec, fn Func) (UPID, error) {
	if fn == nil {
		return UPID{}, errors.New("start task: function is nil")
	}
	if err := validSpec(spec.Type, spec.ID, spec.User); err != nil {
		return UPID{}, fmt.Errorf("start task: %w", err)
	}
	m.mu.Lock()
	if m.shutting {
		m.mu.Unlock()
		return UPID{}, fmt.Errorf("start %s task: %w", spec.Type, ErrShuttingDown)
	}
	m.wg.Add(1)
	m.mu.Unlock()
	started := false
	defer func() {
		if !started {
			m.wg.Done()
		}
	}()

	now := m.now().Unix()
	u := UPID{Node: m.node, PID: m.pid, PStart: m.pstart, Type: spec.Type, ID: spec.ID, User: spec.User}
	var r *run
	for attempt := 1; ; attempt++ {
		u.StartTime = m.nextStart(spec, now)
		if err := u.Validate(); err != nil {
			return UPID{}, fmt.Errorf("start task: %w", err)
		}
		var err error
		r, err = m.create(u)
		if err == nil {
			break
		}
		if !errors.Is(err, errCollision) || attempt == maxStartAttempts {
			return UPID{}, fmt.Errorf("start task %s: %w", u, err)
		}
		m.logger.Debug("UPID in use; trying the next second", "upid", u.String())
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	r.cancel = cancel
	m.mu.Lock()
	m.running[r.str] = r
	m.count++
	if m.cancelAll {
		cancel(errShutdown)
	}
	m.mu.Unlock()

	m.logger.Info("task started", "upid", r.str)
	started = true
	go m.run(ctx, r, fn)
	return u, nil
}

// nextStart returns the start time to use for a task of spec at now.
func (m *Manager) nextStart(spec Spec, now int64) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := spec.Type + ":" + spec.ID + ":" + spec.User
	st := now
	if last, ok := m.lastStart[k]; ok && last >= st {
		st = last + 1
	}
	// Entries older than now can never cause a bump again: forget them.
	if len(m.lastStart) >= 64 {
		for k2, v := range m.lastStart {
			if v < now {
				delete(m.lastStart, k2)
			}
		}
	}
	m.lastStart[k] = st
	return st
}

// create makes the log file of a new task. The log file, created before
// the task function runs, is the task's durable record while it runs: its
// name is the UPID, and Recover indexes a log file that has no index entry
// after a crash. The index entry itself is written once, when the task
// ends, so starting a task costs no store transaction and no fsync.
func (m *Manager) create(u UPID) (*run, error) {
	str := u.String()
	key := taskKey(u)
	// A UPID already in the index (say, left by an earlier process with
	// the same PID and start time whose log was pruned) is taken too.
	if _, err := m.st.Get(context.Background(), key); err == nil {
		return nil, errCollision
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("look up task index: %w", err)
	}
	path := m.logPath(u)
	if err := m.logSubdir(u); err != nil {
		return nil, fmt.Errorf("create log directory: %w", err)
	}
	f, err := m.placeSpare(path)
	if f == nil && err == nil {
		f, err = openFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
		if errors.Is(err, fs.ErrNotExist) {
			// The subdirectory was removed after this Manager made it.
			m.subdirs.And(^(uint32(1) << (u.StartTime & 0xF)))
			if err = m.logSubdir(u); err == nil {
				f, err = openFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
			}
		}
	}
	if errors.Is(err, fs.ErrExist) {
		return nil, errCollision
	}
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	return &run{
		upid: u,
		str:  str,
		key:  key,
		task: runningTask(u),
		log:  newLog(str, f, m.logger),
		done: make(chan struct{}),

		indexed: make(chan struct{}),
	}, nil
}

// runningTask is the index entry of a running task.
func runningTask(u UPID) api.Task {
	return api.Task{
		UPID:      u.String(),
		Node:      u.Node,
		PID:       u.PID,
		PStart:    u.PStart,
		StartTime: u.StartTime,
		Type:      u.Type,
		ID:        u.ID,
		User:      u.User,
		Status:    api.TaskRunning,
	}
}

// run executes fn and records its end, even if fn panics or calls
// runtime.Goexit.
func (m *Manager) run(ctx context.Context, r *run, fn Func) {
	defer m.wg.Done()
	err := errGoexit // kept if fn calls runtime.Goexit
	defer func() { m.finish(ctx, r, err) }()
	err = m.call(ctx, r, fn)
}

// call runs fn, turning a panic into an error.
func (m *Manager) call(ctx context.Context, r *run, fn Func) (err error) {
	defer func() {
		if p := recover(); p != nil {
			m.logger.Error("task panicked", "upid", r.str, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn(ctx, r.log)
}

// finish writes the final log line, records the end in the index and
// releases everyone waiting for the task.
func (m *Manager) finish(ctx context.Context, r *run, err error) {
	m.mu.Lock()
	r.ended = true
	m.mu.Unlock()

	status := exitStatus(ctx, err)
	final := "TASK OK"
	if status != api.TaskOK {
		final = "TASK ERROR: " + status
	}
	r.log.closeWith(final)

	t := r.task
	t.Status = api.TaskStopped
	t.EndTime = max(m.now().Unix(), t.StartTime)
	t.ExitStatus = status
	r.final = t
	// Waiters are released before the log is synced and the index entry
	// written (with an fsync): until then Get answers from memory. A crash
	// in between leaves a log without an index entry, which Recover indexes
	// with the status of the log's final line (or "unexpected status" if
	// that line was lost).
	r.cancel(nil)
	// Done before the log is marked done: a follower that sees the end of
	// the log then always gets the final entry from Get.
	close(r.done)
	r.log.markDone()
	// Let a waiter just woken (a log follower, Wait) run on this
	// processor now: the fsyncs below would otherwise hold the processor
	// in a system call with the waiter queued behind it until the
	// runtime takes the processor back, which on a busy or virtualised
	// host can take milliseconds.
	runtime.Gosched()
	m.logger.Info("task finished", "upid", r.str, "exitstatus", status)

	// The log's fsync and the index entry are written by the committer,
	// together with those of the other tasks that end meanwhile.
	m.mu.Lock()
	m.pending = append(m.pending, r)
	if !m.committing {
		m.committing = true
		m.wg.Add(1) // this goroutine holds a count: Shutdown waits for both
		go m.commit()
	}
	m.mu.Unlock()
}

// commit writes the durable record of ended tasks in batches: it waits
// CommitDelay after the first, fsyncs each batch's logs (after the first
// the file system's journal is mostly committed already) and writes their
// index entries in one store transaction, one fsync, instead of a log
// fsync and a transaction per task. Those fsyncs otherwise each force an
// ext4 journal commit while the next task runs, which slowed a container's
// exec right after its start by more than a millisecond here. It returns
// when no task waits.
//
// Until its entry is written an ended task stays in memory (Get, List
// and Wait answer from there), and Prune waits for it. A crash before the
// commit leaves logs without index entries, which Recover indexes from
// their final lines.
func (m *Manager) commit() {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		hurry := m.shutting
		m.mu.Unlock()
		if !hurry && m.opts.CommitDelay > 0 {
			t := time.NewTimer(m.opts.CommitDelay)
			select {
			case <-t.C:
			case <-m.hurry:
				t.Stop()
			}
		}
		m.mu.Lock()
		batch := m.pending
		m.pending = nil
		if len(batch) == 0 {
			m.committing = false
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		m.commitBatch(batch)
		m.maybePrune()
	}
}

// commitBatch syncs the logs of batch and writes their final index
// entries, then lets them leave memory.
func (m *Manager) commitBatch(batch []*run) {
	objs := make([]store.Object, 0, len(batch))
	for _, r := range batch {
		if err := r.log.syncClose(); err != nil {
			m.logger.Error("cannot write task log", "upid", r.str, "err", err)
		}
		b, err := json.Marshal(r.final)
		if err != nil {
			m.logger.Error("cannot encode task index entry", "upid", r.str, "err", err)
			continue
		}
		objs = append(objs, store.Object{Key: r.key, Value: b})
	}
	if err := m.putAll(objs); err != nil {
		// The tasks stay unindexed until Recover indexes their logs.
		m.logger.Error("cannot record end of tasks in index", "tasks", len(objs), "err", err)
	}
	m.mu.Lock()
	for _, r := range batch {
		close(r.indexed)
		delete(m.running, r.str)
	}
	m.mu.Unlock()
}

// batchDeleter is a store that deletes several objects in one
// transaction, as store.Bolt does (see its DeleteBatch).
type batchDeleter interface {
	DeleteBatch(ctx context.Context, objs []store.Object) ([]string, error)
}

// batchPutter is a store that writes several objects in one transaction,
// as store.Bolt does.
type batchPutter interface {
	PutBatch(ctx context.Context, objs []store.Object) error
}

// putAll writes objs unconditionally, in one transaction if the store can.
func (m *Manager) putAll(objs []store.Object) error {
	ctx := context.Background()
	if bp, ok := m.st.(batchPutter); ok {
		return bp.PutBatch(ctx, objs)
	}
	var errs []error
	for _, o := range objs {
		if _, err := m.st.Put(ctx, o.Key, o.Value, store.Cond{}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// exitStatus turns the result of a task function into a one-line exit
// status.
func exitStatus(ctx context.Context, err error) string {
	if err == nil {
		return api.TaskOK
	}
	msg := err.Error()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		msg = context.Cause(ctx).Error()
	}
	msg = oneLine(msg)
	switch msg {
	case "":
		msg = "unknown error"
	case api.TaskOK:
		// Do not let a failure pass for success.
		msg = "error: " + msg
	}
	return msg
}

// oneLine joins the lines of s with spaces.
func oneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.TrimSpace(strings.Join(lines, " "))
}

// maybePrune runs Prune if the index is over its limit or the last prune
// was long enough ago.
func (m *Manager) maybePrune() {
	now := m.now()
	m.mu.Lock()
	due := m.count > m.opts.MaxCount+m.opts.MaxCount/pruneSlack || now.Sub(m.lastPrune) >= pruneInterval || now.Before(m.lastPrune)
	m.mu.Unlock()
	if !due {
		return
	}
	if err := m.prune(context.Background(), false); err != nil {
		m.logger.Warn("cannot prune task index", "err", err)
	}
}

// Stop asks a running task to stop: it notes "received stop request" in
// the task's log and cancels the task's context with the cause
// "interrupted by user". It does not wait for the task to end; use Wait.
// Stopping a task that is not running in this process returns an error
// wrapping ErrNotRunning, and an unknown task one wrapping
// store.ErrNotFound.
func (m *Manager) Stop(upid string) error {
	u, err := ParseUPID(upid)
	if err != nil {
		return fmt.Errorf("stop task: %w", err)
	}
	m.mu.Lock()
	if r := m.running[upid]; r != nil && !r.ended {
		first := !r.stopRequested
		if first {
			r.stopRequested = true
			r.log.Println("received stop request")
		}
		r.cancel(errInterrupted)
		m.mu.Unlock()
		if first {
			m.logger.Info("task stop requested", "upid", upid)
		}
		return nil
	} else if r != nil {
		m.mu.Unlock()
		return fmt.Errorf("stop task %s: %w", upid, ErrNotRunning)
	}
	m.mu.Unlock()
	if _, _, err := store.GetJSON[api.Task](context.Background(), m.st, taskKey(u)); err != nil {
		return fmt.Errorf("stop task %s: %w", upid, err)
	}
	return fmt.Errorf("stop task %s: %w", upid, ErrNotRunning)
}

// Get returns the index entry of a task.
func (m *Manager) Get(ctx context.Context, upid string) (api.Task, error) {
	u, err := ParseUPID(upid)
	if err != nil {
		return api.Task{}, fmt.Errorf("get task: %w", err)
	}
	if r := m.lookup(upid); r != nil {
		return r.state(), nil
	}
	t, _, err := store.GetJSON[api.Task](ctx, m.st, taskKey(u))
	if err != nil {
		return api.Task{}, fmt.Errorf("get task %s: %w", upid, err)
	}
	return t, nil
}

// state is the task's entry as it is now: its final one once it ended,
// while that is still being written to the index.
func (r *run) state() api.Task {
	select {
	case <-r.done:
		return r.final
	default:
		return r.task
	}
}

// current returns t, a "running" index entry, as it is now in this
// process.
func (m *Manager) current(t api.Task) api.Task {
	if r := m.lookup(t.UPID); r != nil {
		return r.state()
	}
	return t
}

// entry is one task of a listing with its index key.
type entry struct {
	key   string
	value []byte    // the stored entry, or nil for a task only in memory
	task  *api.Task // set for a task only in memory
}

// List returns the index entries f selects, newest first, including the
// tasks running in this process, which get their index entry when they
// end.
func (m *Manager) List(ctx context.Context, f Filter) ([]api.Task, error) {
	// Snapshot the tasks in memory before reading the index: a task leaves
	// memory only after its index entry is written, so none is missed.
	m.mu.Lock()
	mem := make([]entry, 0, len(m.running))
	for _, r := range m.running {
		t := r.state()
		mem = append(mem, entry{key: r.key, task: &t})
	}
	m.mu.Unlock()
	objs, err := m.st.List(ctx, KeyPrefix)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	entries := make([]entry, 0, len(objs)+len(mem))
	indexed := make(map[string]bool, len(objs))
	for _, o := range objs {
		entries = append(entries, entry{key: o.Key, value: o.Value})
		indexed[o.Key] = true
	}
	unsorted := false
	for _, e := range mem {
		if !indexed[e.key] {
			entries = append(entries, e)
			unsorted = true
		}
	}
	if unsorted {
		sort.Slice(entries, func(i, j int) bool { return entries[i].key < entries[j].key })
	}
	out := []api.Task{}
	for i := len(entries) - 1; i >= 0; i-- {
		var t api.Task
		if e := entries[i]; e.task != nil {
			t = *e.task
		} else if err := json.Unmarshal(e.value, &t); err != nil {
			return nil, fmt.Errorf("list tasks: decode %s: %w", e.key, err)
		}
		if t.Status == api.TaskRunning {
			t = m.current(t)
		}
		if !f.match(t) {
			continue
		}
		out = append(out, t)
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	return out, nil
}

func (f Filter) match(t api.Task) bool {
	if f.Errors && (t.Status != api.TaskStopped || t.ExitStatus == api.TaskOK) {
		return false
	}
	if f.Running && t.Status != api.TaskRunning {
		return false
	}
	if f.GuestID != "" && t.ID != f.GuestID {
		return false
	}
	if f.Type != "" && t.Type != f.Type {
		return false
	}
	if !f.Since.IsZero() && t.StartTime < f.Since.Unix() {
		return false
	}
	if !f.Until.IsZero() && t.StartTime > f.Until.Unix() {
		return false
	}
	return true
}

// Running returns the number of tasks running in this process.
func (m *Manager) Running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.running {
		if !r.ended {
			n++
		}
	}
	return n
}

// ReadLog returns up to limit lines (all if limit <= 0) of a task's log,
// starting at line start (0-based). Running reports whether the task is
// still running in this process, so more lines may follow. An unknown task
// yields an error wrapping store.ErrNotFound.
func (m *Manager) ReadLog(upid string, start, limit int) (api.TaskLog, error) {
	u, err := ParseUPID(upid)
	if err != nil {
		return api.TaskLog{}, fmt.Errorf("read task log: %w", err)
	}
	if start < 0 {
		return api.TaskLog{}, fmt.Errorf("read task log %s: start %d is negative", upid, start)
	}
	path := m.logPath(u)
	var data []byte
	running := false
	if r := m.lookup(upid); r != nil {
		// Read only complete lines; a write may be in progress. The run's
		// done, not the log's, says whether it ended: it is closed first,
		// after the final line was written.
		select {
		case <-r.done:
		default:
			running = true
		}
		size, _, _, _, _ := r.log.snapshot()
		data, err = readPrefix(path, size)
	} else {
		data, err = os.ReadFile(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return api.TaskLog{}, fmt.Errorf("read task log %s: %w", upid, store.ErrNotFound)
	}
	if err != nil {
		return api.TaskLog{}, fmt.Errorf("read task log %s: %w", upid, err)
	}
	lines := splitLines(data)
	res := api.TaskLog{Start: start, Total: len(lines), Lines: []string{}, Running: running}
	if start < len(lines) {
		end := len(lines)
		if limit > 0 && limit < end-start {
			end = start + limit
		}
		res.Lines = append(res.Lines, lines[start:end]...)
	}
	return res, nil
}

func readPrefix(path string, size int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, size)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return buf, nil
}

// splitLines splits a log into lines; a final line without a newline (left
// by a crash) counts as a line.
func splitLines(data []byte) []string {
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" && len(data) == 0 {
		return nil
	}
	return strings.Split(s, "\n")
}

// Follow calls emit for each line of a task's log from line start
// (0-based) on. For a task running in this process it then waits for new
// lines and emits them as they are written, returning once the task's end
// is recorded and every line was emitted; for any other task it returns
// after the last line. It stops early with emit's error, unchanged, or
// with an error wrapping ctx's.
func (m *Manager) Follow(ctx context.Context, upid string, start int, emit func(line string) error) error {
	return m.FollowBatches(ctx, upid, start, emit, nil)
}

// FollowBatches is Follow that also calls flush, if not nil, whenever it
// has emitted every line written so far and waits for more, so that a
// stream can buffer the lines emit gets and send each batch at once. After
// the last line it returns without calling flush: the caller's final write
// can carry the last batch.
func (m *Manager) FollowBatches(ctx context.Context, upid string, start int, emit func(line string) error, flush func() error) error {
	u, err := ParseUPID(upid)
	if err != nil {
		return fmt.Errorf("follow task log: %w", err)
	}
	if start < 0 {
		return fmt.Errorf("follow task log %s: start %d is negative", upid, start)
	}
	r := m.lookup(upid)
	f, err := openFile(m.logPath(u), os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("follow task log %s: %w", upid, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("follow task log %s: %w", upid, err)
	}
	defer f.Close()

	idx := 0
	// emitFrom emits the lines of rd, which holds whole lines except
	// possibly the last when partial is true.
	emitFrom := func(rd io.Reader, partial bool) error {
		br := bufio.NewReader(rd)
		for {
			line, rerr := br.ReadString('\n')
			if line == "" && rerr == io.EOF {
				return nil
			}
			if rerr != nil && rerr != io.EOF {
				return fmt.Errorf("follow task log %s: %w", upid, rerr)
			}
			if rerr == io.EOF && !partial {
				// Cannot happen: the size counts only whole lines.
				return fmt.Errorf("follow task log %s: truncated line", upid)
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("follow task log %s: %w", upid, err)
			}
			if idx >= start {
				if err := emit(strings.TrimSuffix(line, "\n")); err != nil {
					return err
				}
			}
			idx++
			if rerr == io.EOF {
				return nil
			}
		}
	}

	if r == nil {
		return emitFrom(f, true)
	}
	var off int64
	pending := false
	for {
		size, _, closed, done, changed := r.log.snapshot()
		if size > off {
			if err := emitFrom(io.NewSectionReader(f, off, size-off), false); err != nil {
				return err
			}
			off = size
			pending = true
		}
		if done {
			return nil
		}
		// Once the final line is written, only the end is still to come:
		// the last batch waits for it.
		if pending && flush != nil && !closed {
			if err := flush(); err != nil {
				return err
			}
			pending = false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("follow task log %s: %w", upid, ctx.Err())
		}
	}
}

// Wait waits until a task running in this process ends and returns its
// final index entry. For any other task it returns the index entry at once.
func (m *Manager) Wait(ctx context.Context, upid string) (api.Task, error) {
	if _, err := ParseUPID(upid); err != nil {
		return api.Task{}, fmt.Errorf("wait for task: %w", err)
	}
	r := m.lookup(upid)
	if r == nil {
		return m.Get(ctx, upid)
	}
	select {
	case <-r.done:
		return r.final, nil
	case <-ctx.Done():
		return api.Task{}, fmt.Errorf("wait for task %s: %w", upid, ctx.Err())
	}
}

// Recover repairs the index after a crash. Call it at daemon start, before
// starting any task: every entry still "running" that is not running in
// this process is marked stopped with exit status "unexpected status" and
// an end time taken from its log's last modification (or now), and the log
// gets the final line "TASK ERROR: unexpected status". Every task log
// without an index entry (a task's entry is written when it ends) gets one
// (see recoverLogs). It returns how many entries it repaired or added and
// joins the errors of those it could not.
func (m *Manager) Recover(ctx context.Context) (int, error) {
	objs, err := m.st.List(ctx, KeyPrefix)
	if err != nil {
		return 0, fmt.Errorf("recover tasks: %w", err)
	}
	n := 0
	var errs []error
	for _, o := range objs {
		var t api.Task
		if err := json.Unmarshal(o.Value, &t); err != nil {
			errs = append(errs, fmt.Errorf("recover tasks: decode %s: %w", o.Key, err))
			continue
		}
		if t.Status != api.TaskRunning || m.lookup(t.UPID) != nil {
			continue
		}
		end := m.now().Unix()
		if u, err := ParseUPID(t.UPID); err != nil {
			m.logger.Warn("task index entry has a malformed UPID; not touching its log", "key", o.Key, "err", err)
		} else if mtime, err := m.appendUnexpected(u); err != nil {
			m.logger.Warn("cannot append to log of crashed task", "upid", t.UPID, "err", err)
		} else if !mtime.IsZero() {
			end = mtime.Unix()
		}
		t.Status = api.TaskStopped
		t.EndTime = max(end, t.StartTime)
		t.ExitStatus = api.TaskUnexpected
		if _, err := store.PutJSON(ctx, m.st, o.Key, t, store.Cond{Digest: o.Digest}); err != nil {
			errs = append(errs, fmt.Errorf("recover task %s: %w", t.UPID, err))
			continue
		}
		m.logger.Warn("task was running when the daemon stopped; marked as failed", "upid", t.UPID)
		n++
	}
	indexed := make(map[string]bool, len(objs))
	for _, o := range objs {
		indexed[o.Key] = true
	}
	k, err := m.recoverLogs(ctx, indexed)
	if err != nil {
		errs = append(errs, err)
	}
	return n + k, errors.Join(errs...)
}

// recoverLogs indexes the task logs that have no index entry: tasks that
// were running when the daemon stopped (a task's entry is written when it
// ends) or whose final entry was not written yet. A log ending in the
// final line "TASK OK" or "TASK ERROR: ..." gives the exit status; any
// other gets the final line "TASK ERROR: unexpected status" and that
// status. The end time is the log's modification time.
func (m *Manager) recoverLogs(ctx context.Context, indexed map[string]bool) (int, error) {
	dirs, err := os.ReadDir(m.logDir)
	if err != nil {
		return 0, fmt.Errorf("recover tasks: read log directory: %w", err)
	}
	n := 0
	var errs []error
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(m.logDir, d.Name()))
		if err != nil {
			m.logger.Warn("cannot read task log directory; its unindexed tasks stay unlisted", "err", err)
			continue
		}
		for _, f := range files {
			if err := ctx.Err(); err != nil {
				return n, fmt.Errorf("recover tasks: %w", err)
			}
			u, err := ParseUPID(f.Name())
			if err != nil || !f.Type().IsRegular() || m.logPath(u) != filepath.Join(m.logDir, d.Name(), f.Name()) {
				continue // not a task log
			}
			key := taskKey(u)
			if indexed[key] || m.lookup(u.String()) != nil {
				continue
			}
			t, err := m.indexLog(ctx, u, key)
			if err != nil {
				errs = append(errs, fmt.Errorf("recover task %s: %w", u, err))
				continue
			}
			if t.ExitStatus == api.TaskUnexpected {
				m.logger.Warn("task was running when the daemon stopped; marked as failed", "upid", t.UPID)
			} else {
				m.logger.Warn("task had ended but was not indexed; indexed from its log", "upid", t.UPID, "exitstatus", t.ExitStatus)
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// indexLog writes the index entry of the task whose log has none.
func (m *Manager) indexLog(ctx context.Context, u UPID, key string) (api.Task, error) {
	t := runningTask(u)
	t.Status = api.TaskStopped
	path := m.logPath(u)
	// Like an index entry's log, an unreadable log does not stop the
	// daemon from starting: the task is recorded as crashed.
	status, mtime, err := finalStatus(path)
	if err != nil {
		m.logger.Warn("cannot read log of unindexed task", "upid", t.UPID, "err", err)
	}
	if status == "" {
		status = api.TaskUnexpected
		if mtime, err = m.appendUnexpected(u); err != nil {
			m.logger.Warn("cannot append to log of crashed task", "upid", t.UPID, "err", err)
		}
	}
	end := m.now().Unix()
	if !mtime.IsZero() {
		end = mtime.Unix()
	}
	t.EndTime = max(end, t.StartTime)
	t.ExitStatus = status
	if _, err := store.PutJSON(ctx, m.st, key, t, store.Cond{Create: true}); err != nil {
		return t, fmt.Errorf("record in task index: %w", err)
	}
	return t, nil
}

// maxFinalLine bounds the tail read for a log's final line.
const maxFinalLine = 8192

// finalStatus returns the exit status named by a log's final line ("" if
// the log does not end in one) and the log's modification time.
func finalStatus(path string) (string, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("stat log: %w", err)
	}
	size := fi.Size()
	if size == 0 {
		return "", time.Time{}, nil
	}
	n := min(size, maxFinalLine)
	tail := make([]byte, n)
	if _, err := f.ReadAt(tail, size-n); err != nil {
		return "", time.Time{}, fmt.Errorf("read log: %w", err)
	}
	if tail[n-1] != '\n' {
		return "", fi.ModTime(), nil
	}
	tail = tail[:n-1]
	i := bytes.LastIndexByte(tail, '\n')
	if i < 0 && n < size {
		return "", fi.ModTime(), nil // final line longer than the tail read
	}
	last := string(tail[i+1:])
	switch {
	case last == "TASK OK":
		return api.TaskOK, fi.ModTime(), nil
	case strings.HasPrefix(last, "TASK ERROR: ") && len(last) > len("TASK ERROR: "):
		return strings.TrimPrefix(last, "TASK ERROR: "), fi.ModTime(), nil
	}
	return "", fi.ModTime(), nil
}

// appendUnexpected appends the final line of a crashed task to its log,
// creating the log if it is missing, and returns the log's modification
// time before (zero if it was empty). It is idempotent.
func (m *Manager) appendUnexpected(u UPID) (time.Time, error) {
	final := "TASK ERROR: " + api.TaskUnexpected + "\n"
	path := m.logPath(u)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return time.Time{}, fmt.Errorf("create log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return time.Time{}, fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return time.Time{}, fmt.Errorf("stat log: %w", err)
	}
	var mtime time.Time
	line := final
	if size := fi.Size(); size > 0 {
		mtime = fi.ModTime()
		n := min(size, int64(len(final)+1))
		tail := make([]byte, n)
		if _, err := f.ReadAt(tail, size-n); err != nil {
			return time.Time{}, fmt.Errorf("read log: %w", err)
		}
		if bytes.HasSuffix(tail, []byte(final)) && (n == size || tail[0] == '\n') {
			return mtime, nil // already appended by an earlier Recover
		}
		if tail[n-1] != '\n' {
			line = "\n" + line // end the partial line the crash left
		}
	}
	if _, err := f.WriteString(line); err != nil {
		return time.Time{}, fmt.Errorf("append to log: %w", err)
	}
	if err := f.Sync(); err != nil {
		return time.Time{}, fmt.Errorf("sync log: %w", err)
	}
	return mtime, nil
}

// Prune removes the index entries and logs of stopped tasks that ended
// more than MaxAge ago, and then of the oldest stopped tasks while the
// index holds more than MaxCount entries. Running tasks are never removed.
// Finishing tasks call Prune at most once a minute unless the index is
// over MaxCount; a daemon calls it at start, after Recover.
func (m *Manager) Prune(ctx context.Context) error {
	return m.prune(ctx, true)
}

// prune is Prune; the committer calls it with wait false, since the
// index entries Prune would wait for are its own to write.
func (m *Manager) prune(ctx context.Context, wait bool) error {
	m.pruneMu.Lock()
	defer m.pruneMu.Unlock()
	now := m.now()
	// Tasks that ended are about to get their index entry: wait for it,
	// so that they are pruned like the others.
	for _, ch := range m.indexing() {
		if !wait {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("prune tasks: %w", ctx.Err())
		}
	}
	objs, err := m.st.List(ctx, KeyPrefix)
	if err != nil {
		return fmt.Errorf("prune tasks: %w", err)
	}
	cutoff := now.Add(-m.opts.MaxAge).Unix()
	// Running tasks have no index entry yet but count.
	excess := len(objs) + m.unindexed(objs) - m.opts.MaxCount
	removed := 0
	var errs []error
	var doomed []store.Object
	var upids []string
	for _, o := range objs { // oldest first: keys are in start order
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("prune tasks: %w", err))
			break
		}
		var t api.Task
		if err := json.Unmarshal(o.Value, &t); err != nil {
			errs = append(errs, fmt.Errorf("prune tasks: decode %s: %w", o.Key, err))
			continue
		}
		if excess <= 0 && t.StartTime >= cutoff {
			break // this one and all after it stay
		}
		if t.Status != api.TaskStopped {
			continue
		}
		if excess <= 0 && max(t.StartTime, t.EndTime) >= cutoff {
			continue
		}
		doomed = append(doomed, o)
		upids = append(upids, t.UPID)
		excess--
	}
	// Entries first, in one transaction where the store can; then the
	// logs of those deleted.
	gone := map[string]bool{}
	if bd, ok := m.st.(batchDeleter); ok {
		keys, err := bd.DeleteBatch(ctx, doomed)
		if err != nil {
			errs = append(errs, fmt.Errorf("prune tasks: %w", err))
		}
		for _, k := range keys {
			gone[k] = true
		}
	} else {
		for i, o := range doomed {
			err := m.st.Delete(ctx, o.Key, store.Cond{Digest: o.Digest})
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, fmt.Errorf("prune task %s: %w", upids[i], err))
				continue
			}
			gone[o.Key] = true
		}
	}
	for i, o := range doomed {
		if !gone[o.Key] {
			continue
		}
		removed++
		if u, err := ParseUPID(upids[i]); err == nil {
			if err := os.Remove(m.logPath(u)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("prune task %s: remove log: %w", upids[i], err))
			}
		}
	}
	unindexed := m.unindexed(objs)
	m.mu.Lock()
	m.count = len(objs) + unindexed - removed
	m.lastPrune = now
	m.mu.Unlock()
	if removed > 0 {
		m.logger.Info("pruned task index", "removed", removed, "kept", len(objs)-removed)
	}
	return errors.Join(errs...)
}

// indexing returns the indexed channels of the tasks that ended but may
// not have their final index entry yet.
func (m *Manager) indexing() []<-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []<-chan struct{}
	for _, r := range m.running {
		if r.ended {
			out = append(out, r.indexed)
		}
	}
	return out
}

// unindexed returns how many tasks of this process have no entry in objs.
func (m *Manager) unindexed(objs []store.Object) int {
	keys := make(map[string]bool, len(objs))
	for _, o := range objs {
		keys[o.Key] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.running {
		if !keys[r.key] {
			n++
		}
	}
	return n
}

// Shutdown stops accepting tasks (Start then fails with ErrShuttingDown)
// and waits for the running ones to end. If ctx is done first, it notes
// "received shutdown request" in the logs of the remaining tasks, cancels
// them with the cause "interrupted by daemon shutdown", waits for them to
// record their end, and returns an error wrapping ctx's.
// A task function that ignores its context therefore delays Shutdown
// indefinitely. After Shutdown no index entry of this process is left
// "running" (unless the store failed), so the store can then be closed.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	if !m.shutting {
		close(m.hurry)
	}
	m.shutting = true
	m.mu.Unlock()
	allDone := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(allDone)
	}()
	select {
	case <-allDone:
		m.dropSpares()
		return nil
	case <-ctx.Done():
	}
	defer m.dropSpares()
	m.mu.Lock()
	m.cancelAll = true
	n := 0
	for _, r := range m.running {
		if !r.ended {
			r.log.Println("received shutdown request")
			r.cancel(errShutdown)
			n++
		}
	}
	m.mu.Unlock()
	m.logger.Warn("shutdown deadline reached; cancelled running tasks", "count", n)
	<-allDone
	return fmt.Errorf("shut down task manager: cancelled %d running task(s): %w", n, ctx.Err())
}
