package ctinit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A container's exec helper is the first child of its start (see
// StartInit with Spec.Helper), kept instead of exiting once init runs. It
// already is most of what a command in the container needs to be: in the
// container's namespaces (and, for its children, its PID namespace), the
// guest's root and confined (capability bounding set, no_new_privs, the
// seccomp filter, which init inherited from it too). An exec then costs
// one clone: the helper spawns the command with CLONE_VM | CLONE_VFORK |
// CLONE_PARENT (a child of the daemon, like Join's), which only sets up
// its descriptors, joins the container's cgroups through files the helper
// keeps open and executes. Join, by contrast, forks two processes that
// open and join every cgroup, enter every namespace, take the guest's
// credentials and install the seccomp filter for each command.
//
// The helper shares the daemon's memory, like the vforked children, but
// runs alongside it: a loop of raw system calls on its own stack and with
// a thread-local storage of its own, with every signal blocked, waiting on
// a socket (serve). It is outside the container's PID namespace, so no
// process inside can see, signal or trace it, and once init runs it is
// back in the daemon's own cgroups: it counts against none of the
// container's limits, and an out-of-memory kill in the container never
// picks it (killing a process kills all that share its memory: the
// daemon). It dies with the daemon (parent-death signal) and when the
// container stops; a daemon that restarts runs commands through Join.

// Descriptor numbers in the helper and in the command's process before
// it executes the command.
const (
	// helperSock is the helper's end of its socket.
	helperSock = 9
	// helperFD and the next helperFDs-1 are a request's descriptors:
	// the command's stdin, stdout, stderr and the report pipe.
	helperFD  = 10
	helperFDs = 4
	// helperJoin and up are the cgroup.procs files the command joins.
	helperJoin = 20
)

// cmsgLen0 is the length of a control message header without data.
var cmsgLen0 = uint64(unix.CmsgLen(0))

// servePlan is the helper's loop state (kServe), in the memory it shares
// with the daemon.
type servePlan struct {
	sock   uintptr
	msg    unix.Msghdr
	iov    unix.Iovec
	req    uintptr // the request's address (the message's 8 bytes)
	ctl    [64]byte
	answer byte
}

// newServePlan returns the loop state for a helper serving on sock, its
// pointers set.
func newServePlan(sock uintptr) *servePlan {
	sp := &servePlan{sock: sock}
	sp.iov.Base = (*byte)(unsafe.Pointer(&sp.req))
	sp.msg.Iov = &sp.iov
	sp.msg.Control = &sp.ctl[0]
	return sp
}

// execRequest is one command for the helper: it spawns child with args
// and stores the PID (or the clone's errno).
type execRequest struct {
	args  cloneArgs
	child childArgs
	pid   int64
	errno uint64
	// stack is the command's (getStack), given back once the command
	// ended; kept when the helper died with the request (the command
	// may still run on it).
	stack []byte
}

// ErrHelperGone means a container's exec helper no longer runs (or never
// ran); Join still works.
var ErrHelperGone = errors.New("the container's exec helper is gone")

// Helper is the daemon's handle of a container's exec helper.
type Helper struct {
	mu     sync.Mutex
	sock   int      // the daemon's end
	sockf  *os.File // sock on the runtime's poller, for answers
	pid    int
	pidfd  int
	joins  int   // cgroup.procs files a command joins (helperJoin and up)
	keep   []any // the memory the helper runs on (program.lasting)
	stack  []byte
	closed bool
}

// helperSteps appends to p (the first child of a start, in the
// container's groups, its report descriptor closed) what turns it into
// the helper once init runs: go back to the daemon's own groups (leave: the daemon's cgroup.procs files),
// set the parent-death signal, arrange its descriptors (null on 0 to 2,
// sock, the container's cgroup.procs files in join, which commands write
// to) and serve. A step failing after the report's close ends the helper
// only (Exec then answers ErrHelperGone); none can leave it serving from
// inside the container's groups.
func helperSteps(p *program, sock, null uintptr, leave, join []uintptr) {
	one := p.cstr("0")
	p.lasting = append(p.lasting, p.keep[len(p.keep)-1])
	for _, fd := range leave {
		p.call("move the exec helper back to the daemon's groups", unix.SYS_WRITE, fd, one, 1)
		p.call("move the exec helper back to the daemon's groups", unix.SYS_CLOSE, fd)
	}
	// Die with the daemon thread that started it (after the credential
	// change, which clears it).
	p.call("parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL))
	for i := uintptr(0); i < 3; i++ {
		p.call("standard descriptors", unix.SYS_DUP3, null, i, 0)
	}
	p.call("helper socket", unix.SYS_DUP3, sock, helperSock, unix.O_CLOEXEC)
	p.tolerate(unix.EINVAL, 0)
	for i, fd := range join {
		p.call("cgroup descriptors", unix.SYS_DUP3, fd, helperJoin+uintptr(i), unix.O_CLOEXEC)
		p.tolerate(unix.EINVAL, 0)
	}
	p.call("close descriptors", unix.SYS_CLOSE_RANGE, 3, helperSock-1, 0)
	p.call("close descriptors", unix.SYS_CLOSE_RANGE, helperSock+1, helperJoin-1, 0)
	p.call("close descriptors", unix.SYS_CLOSE_RANGE, helperJoin+uintptr(len(join)), ^uintptr(0)>>32, 0)
	sp := newServePlan(helperSock)
	p.lasting = append(p.lasting, sp)
	p.special("serve", kServe, unsafe.Pointer(sp))
}

// Exec runs spec.Argv through the helper, as Join does (spec.PID,
// StartTime, Privileged, Cgroups and KSM are the helper's already and not
// looked at); ErrHelperGone means the helper no longer runs.
func (h *Helper) Exec(ctx context.Context, spec JoinSpec) (int, error) {
	if len(spec.Argv) == 0 {
		return 0, fmt.Errorf("no command given")
	}
	var tr *tracer
	if spec.Stages != nil {
		tr = &tracer{}
	}
	c, r, err := h.request(spec, tr)
	if err != nil {
		return 0, err
	}
	var rep [2]int
	if err := unix.Pipe2(rep[:], unix.O_CLOEXEC); err != nil {
		putStack(r.stack)
		return 0, fmt.Errorf("report pipe: %w", err)
	}
	repR, err := pollable(rep[0], "report pipe")
	if err != nil {
		putStack(r.stack)
		unix.Close(rep[1])
		return 0, err
	}
	defer repR.Close()
	var t0, t1 unix.Timespec
	if spec.Stages != nil {
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t0)
	}
	ok, err := h.send(r, [helperFDs]int{spec.Stdio[0], spec.Stdio[1], spec.Stdio[2], rep[1]}, repR)
	unix.Close(rep[1])
	if err != nil {
		// The helper may have spawned the command before it died: the
		// stack is not given back.
		return 0, err
	}
	if !ok {
		putStack(r.stack)
		return 0, fmt.Errorf("exec helper: the request was refused")
	}
	if r.errno != 0 {
		runtime.KeepAlive(c)
		putStack(r.stack)
		return 0, fmt.Errorf("start the command: %w", unix.Errno(r.errno))
	}
	pid := int(r.pid)
	if spec.Stages != nil {
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t1)
	}
	// The command is this daemon's unreaped child (CLONE_PARENT): its PID
	// is its own until the wait below.
	pf, err := openPolledPidfd(pid)
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		reap(pid)
		putStack(r.stack)
		return 0, fmt.Errorf("pidfd of the command: %w", err)
	}
	defer pf.Close()
	stop := context.AfterFunc(ctx, func() { pf.kill() })
	defer stop()
	setupErr := c.readReportFile(repR)
	ws := pf.reap()
	runtime.KeepAlive(c) // the command's process ran on its memory until execve
	runtime.KeepAlive(r)
	putStack(r.stack)
	if tr != nil {
		var t2 unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t2)
		*spec.Stages = append(tr.stages(t0, t1), Stage{Name: "run", Took: ns(t1, t2)})
	}
	if setupErr != nil {
		return 0, fmt.Errorf("entering the container failed: %w", setupErr)
	}
	return exitCode(ws)
}

// request builds the command's program and the request for it.
func (h *Helper) request(spec JoinSpec, tr *tracer) (*program, *execRequest, error) {
	c := newProgram()
	c.report = helperFD + 3
	tr.mark(c, "setup")
	for i := uintptr(0); i < 3; i++ {
		c.call("set up standard descriptors", unix.SYS_DUP3, helperFD+i, i, 0)
	}
	tr.mark(c, "cgroups")
	one := c.cstr("0")
	for i := 0; i < h.joins; i++ {
		c.call("join the container's cgroups", unix.SYS_WRITE, helperJoin+uintptr(i), one, 1)
	}
	c.call("new session", unix.SYS_SETSID)
	if spec.TTY {
		c.call("set controlling terminal", unix.SYS_IOCTL, 0, unix.TIOCSCTTY, 0)
	}
	// Die with the daemon thread that is the parent (CLONE_PARENT).
	c.call("parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL))
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	c.call("change to "+cwd, unix.SYS_CHDIR, c.cstr(cwd))
	c.call("close descriptors", unix.SYS_CLOSE_RANGE, 3, helperFD+2, 0)
	c.call("close descriptors", unix.SYS_CLOSE_RANGE, helperFD+helperFDs, ^uintptr(0)>>32, 0)
	c.call("clear the signal mask", unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(c.buf(8)), 0, 8)
	tr.mark(c, "exec")
	if err := execCommand(c, spec); err != nil {
		return nil, nil, err
	}
	stack, err := getStack()
	if err != nil {
		return nil, nil, err
	}
	r := &execRequest{
		args:  cloneArgs{flags: unix.CLONE_VM | unix.CLONE_VFORK | unix.CLONE_PARENT, stack: uint64(uintptr(unsafe.Pointer(&stack[0]))), stackSize: childStack},
		child: newChildArgs(c.steps, c.report),
		stack: stack,
	}
	return c, r, nil
}

// send passes r and its descriptors to the helper and waits for its
// answer: whether it took the request. The answer comes once the command
// executed; while the helper waits for that, its end of the report pipe
// (repR) stays open, so waiting for the answer on the runtime's poller
// is waiting for repR's writers too: the answer is read without blocking
// a thread in a system call.
func (h *Helper) send(r *execRequest, fds [helperFDs]int, repR *os.File) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false, ErrHelperGone
	}
	addr := uintptr(unsafe.Pointer(r))
	msg := (*[8]byte)(unsafe.Pointer(&addr))[:]
	rc, err := h.sockf.SyscallConn()
	if err != nil {
		return false, fmt.Errorf("%w (%v)", ErrHelperGone, err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), msg, unix.UnixRights(fds[:]...), nil, 0)
		return serr != unix.EAGAIN
	}); err != nil || serr != nil {
		return false, fmt.Errorf("%w (%v %v)", ErrHelperGone, err, serr)
	}
	var b [1]byte
	n, err := h.sockf.Read(b[:])
	runtime.KeepAlive(r)
	if err != nil || n != 1 {
		return false, fmt.Errorf("%w (no answer: %v)", ErrHelperGone, err)
	}
	return b[0] == 1, nil
}

// pollable makes fd non-blocking and returns it as a file on the
// runtime's poller: reading it parks the goroutine instead of holding a
// thread (and a scheduler slot the runtime then takes back) in a system
// call.
func pollable(fd int, name string) (*os.File, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// polledPidfd is a pidfd on the runtime's poller, for waiting for a child.
type polledPidfd struct {
	f   *os.File
	pid int
}

func openPolledPidfd(pid int) (*polledPidfd, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &polledPidfd{f: os.NewFile(uintptr(fd), "pidfd"), pid: pid}, nil
}

func (p *polledPidfd) kill() {
	if rc, err := p.f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0) })
	}
}

// reap waits (parked) until the child exits and reaps it.
func (p *polledPidfd) reap() unix.WaitStatus {
	var ws unix.WaitStatus
	rc, err := p.f.SyscallConn()
	if err != nil {
		return reap(p.pid)
	}
	done := false
	if err := rc.Read(func(uintptr) bool {
		n, err := unix.Wait4(p.pid, &ws, unix.WNOHANG, nil)
		done = n == p.pid || err != nil && err != unix.EINTR
		return done
	}); err != nil || !done {
		return reap(p.pid)
	}
	return ws
}

func (p *polledPidfd) Close() error { return p.f.Close() }

// Close ends the helper and reaps it. Safe to call more than once and
// while another goroutine execs (which then gets ErrHelperGone).
func (h *Helper) Close() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	_ = unix.PidfdSendSignal(h.pidfd, unix.SIGKILL, nil, 0)
	h.sockf.Close() // and h.sock
	// Its exit may take a while (it may hold the container's last
	// namespace references): wait on the poller, not in a system call.
	if pf, err := openPolledPidfd(h.pid); err == nil {
		pf.reap()
		pf.Close()
	} else {
		reap(h.pid)
	}
	unix.Close(h.pidfd)
	runtime.KeepAlive(h.keep)
	putStack(h.stack) // the helper is reaped
	h.stack = nil
}

// PID is the helper's process on the host.
func (h *Helper) PID() int { return h.pid }

// ns is the time from a to b.
func ns(a, b unix.Timespec) time.Duration { return time.Duration(b.Nano() - a.Nano()) }
