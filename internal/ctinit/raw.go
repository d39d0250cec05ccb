package ctinit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A program is a list of system calls that a child forked from the daemon
// runs between fork and execve. Everything it touches (paths, argument
// vectors, buffers) is prepared by the daemon before the fork, so the child
// runs no Go code beyond one loop of raw system calls: after the fork it
// is a copy of one thread of a multi-threaded Go process, without a
// runtime it may use (no allocation, no stack growth, no locks).
//
// A failing step makes the child write a report (step number and errno)
// to its report descriptor and exit with status exitSetupFailed; the
// report descriptor is close-on-exec, so the daemon reads either a report
// or end-of-file once the final execve succeeded.
type program struct {
	steps []step
	// names say what each step does, for error messages, indexed by
	// step.id; a program and the child programs it spawns share them.
	names *[]string
	keep  []any // memory the steps point to, kept alive and on the heap
	// report is the descriptor (in the child) failures are written to.
	report uintptr
	// lasting is what a child that outlives its setup (the exec helper)
	// still uses afterwards, to keep once the rest may go (see
	// Helper); stack is that child's stack, mapped outside the Go heap
	// (only the pages it touches cost memory), to unmap after it ended.
	lasting []any
	stack   []byte
}

// newProgram returns an empty program that reports on rep.
func newProgram() *program { return &program{names: new([]string)} }

// child returns an empty program for a process that p spawns (see
// spawn): it shares p's step names and report descriptor, and p keeps
// its memory alive.
func (p *program) child() *program {
	c := &program{names: p.names, report: p.report}
	p.keep = append(p.keep, c)
	return c
}

// named records name for a new step and returns the step's id.
func (p *program) named(name string) uint32 {
	*p.names = append(*p.names, name)
	return uint32(len(*p.names) - 1)
}

// Kinds of step.
const (
	kCall     uint8 = iota // a system call
	kRecvFD                // recvmsg a message carrying one descriptor into reg
	kOr16                  // *(*uint16)(ptr) |= a[0]
	kExec                  // the final execve, see execPlan
	kRunWait               // fork, execve a helper tool (execPlan), wait: status 0
	kSpawn                 // clone3 a child running another program (spawnPlan)
	kStoreReg              // *(*int32)(ptr) = reg
	kAwait                 // read one byte from a[0] into ptr; end of file: exit quietly
	kServe                 // serve exec requests for ever (servePlan, see Helper)
	kWaitEOF               // read from a[0] into ptr until end of file
)

// step is one action of a program.
type step struct {
	kind uint8
	// id names the step in reports (program.names).
	id uint32
	// fdArg is the argument replaced by reg before the call, -1 for none.
	fdArg int8
	// setReg stores the call's result in reg.
	setReg bool
	trap   uintptr
	a      [6]uintptr
	// ptr is what kRecvFD (the *int32 the descriptor lands in), kOr16
	// (the *uint16) and kExec and kRunWait (the *execPlan) work on.
	ptr unsafe.Pointer
	// ok1 and ok2 are errnos that do not count as failures.
	ok1, ok2 syscall.Errno
}

// execPlan is the command a kExec or kRunWait step executes.
type execPlan struct {
	paths      []*byte // candidates tried in turn, as execvp does
	argv, envv []*byte // nil-terminated
	// notFound and noExec are written to fd 2 before exiting with 127 or
	// 126 when no candidate could be executed.
	notFound, noExec []byte
	// fallbackFD, when not -1, is executed (execveat, AT_EMPTY_PATH) with
	// fallbackArgv if no candidate exists.
	fallbackFD   uintptr
	fallbackArgv []*byte
	empty        *byte
	// rep, when not noFD, gets a report for step when no candidate
	// could be executed, before the exit.
	rep  uintptr
	step uint32
	// run is the child of a kRunWait step (see program.runWait).
	run spawnPlan
}

// noFD marks an unused descriptor field.
const noFD = ^uintptr(0)

// exitSetupFailed is the child's exit status when a step failed.
const exitSetupFailed = 125

// report is what a failed child writes: the step and its errno (a
// kRunWait step reports the tool's wait status plus 1<<16).
type report struct {
	step  uint32
	errno uint32
}

// cstr returns a pointer to a NUL-terminated copy of s on the heap.
func (p *program) cstr(s string) uintptr {
	b := append([]byte(s), 0)
	p.keep = append(p.keep, b)
	return uintptr(unsafe.Pointer(&b[0]))
}

// buf returns a pointer to n zeroed heap bytes.
func (p *program) buf(n int) unsafe.Pointer {
	b := make([]byte, n)
	p.keep = append(p.keep, b)
	return unsafe.Pointer(&b[0])
}

// special appends a step of a kind other than kCall.
func (p *program) special(name string, kind uint8, ptr unsafe.Pointer, args ...uintptr) {
	s := step{kind: kind, fdArg: -1, ptr: ptr, id: p.named(name)}
	copy(s.a[:], args)
	p.keep = append(p.keep, ptr)
	p.steps = append(p.steps, s)
}

// ptr keeps v alive and returns its address.
func (p *program) ptr(v any, addr unsafe.Pointer) uintptr {
	p.keep = append(p.keep, v)
	return uintptr(addr)
}

// call appends a system call step.
func (p *program) call(name string, trap uintptr, args ...uintptr) *step {
	s := step{kind: kCall, fdArg: -1, trap: trap, id: p.named(name)}
	copy(s.a[:], args)
	p.steps = append(p.steps, s)
	return &p.steps[len(p.steps)-1]
}

// useFDs makes the child keep exactly the descriptors fds (besides 0, 1
// and 2): its first steps move them to a fresh range and close every
// other descriptor it inherited from the daemon, so that it holds no
// copy of a pipe or socket the daemon waits on (or listens on) while it
// runs its steps. It returns their numbers in the child; they are
// close-on-exec.
func (p *program) useFDs(fds ...int) []uintptr { return p.useFDsFrom(3, fds...) }

// useFDsFrom is useFDs with the fresh range starting at min or above.
func (p *program) useFDsFrom(min int, fds ...int) []uintptr {
	base := min
	for _, fd := range fds {
		base = max(base, fd+1)
	}
	out := make([]uintptr, len(fds))
	for i, fd := range fds {
		out[i] = uintptr(base + i)
		p.call("keep descriptors", unix.SYS_DUP3, uintptr(fd), out[i], unix.O_CLOEXEC)
	}
	if base > 3 {
		p.call("close inherited descriptors", unix.SYS_CLOSE_RANGE, 3, uintptr(base-1), 0)
	}
	p.call("close inherited descriptors", unix.SYS_CLOSE_RANGE, uintptr(base+len(fds)), ^uintptr(0)>>32, 0)
	return out
}

// onReg makes the last step use reg as argument i.
func (p *program) onReg(i int8) { p.steps[len(p.steps)-1].fdArg = i }

// tolerate makes the last step ignore the given errnos.
func (p *program) tolerate(e1, e2 syscall.Errno) {
	p.steps[len(p.steps)-1].ok1, p.steps[len(p.steps)-1].ok2 = e1, e2
}

// mount appends a mount(2) step.
func (p *program) mount(name, src, dst, fstype string, flags uintptr, data string) {
	var s, f, d uintptr
	if src != "" {
		s = p.cstr(src)
	}
	if fstype != "" {
		f = p.cstr(fstype)
	}
	if data != "" {
		d = p.cstr(data)
	}
	p.call(name, unix.SYS_MOUNT, s, p.cstr(dst), f, flags, d)
}

// runWait appends a step that runs e in a child and waits for it: exit
// status 0 or the step fails. The child shares the memory (a vfork:
// nothing is copied, the caller waits until it executed e) and clears
// the signal mask first.
func (p *program) runWait(name string, e *execPlan) {
	c := p.child()
	c.call(name+": clear the signal mask", unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(p.buf(8)), 0, 8)
	c.special(name, kExec, unsafe.Pointer(e))
	stack := p.buf(childStack)
	e.run = spawnPlan{child: newChildArgs(c.steps, c.report),
		args: cloneArgs{flags: unix.CLONE_VM | unix.CLONE_VFORK, exitSignal: uint64(unix.SIGCHLD), stack: uint64(uintptr(stack)), stackSize: childStack}}
	p.special(name, kRunWait, unsafe.Pointer(e))
}

// exec builds an execPlan; paths are tried in turn.
func (p *program) execPlan(paths, argv, env []string) (*execPlan, error) {
	e := &execPlan{fallbackFD: noFD, rep: noFD}
	var err error
	if e.argv, err = syscall.SlicePtrFromStrings(argv); err != nil {
		return nil, err
	}
	if e.envv, err = syscall.SlicePtrFromStrings(env); err != nil {
		return nil, err
	}
	for _, s := range paths {
		b, err := syscall.BytePtrFromString(s)
		if err != nil {
			return nil, err
		}
		e.paths = append(e.paths, b)
	}
	e.empty = &[]byte{0}[0]
	p.keep = append(p.keep, e)
	return e, nil
}

// errorFor turns a child's report into an error.
func (p *program) errorFor(r report) error {
	name := fmt.Sprintf("step %d", r.step)
	if int(r.step) < len(*p.names) {
		name = (*p.names)[r.step]
	}
	if r.errno&(1<<16) != 0 {
		ws := syscall.WaitStatus(r.errno &^ (1 << 16))
		return fmt.Errorf("%s: exit status %d", name, ws.ExitStatus())
	}
	return fmt.Errorf("%s: %w", name, syscall.Errno(r.errno))
}

// readReportFile is readReport on a file (of the runtime's poller).
func (p *program) readReportFile(f *os.File) error {
	var b [8]byte
	n, err := io.ReadFull(f, b[:])
	switch {
	case n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF):
		return nil
	case err == io.ErrUnexpectedEOF:
		return fmt.Errorf("short setup report from the child (%d bytes)", n)
	case err != nil:
		return fmt.Errorf("read the child's setup report: %w", err)
	}
	return p.errorFor(*(*report)(unsafe.Pointer(&b[0])))
}

// readReport reads a child's report from fd: nil once the child executed
// its command (end of file), the failure otherwise.
func (p *program) readReport(fd int) error {
	var b [8]byte
	for {
		n, err := unix.Read(fd, b[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read the child's setup report: %w", err)
		}
		if n == 0 {
			return nil
		}
		if n != len(b) {
			return fmt.Errorf("short setup report from the child (%d bytes)", n)
		}
		r := *(*report)(unsafe.Pointer(&b[0]))
		return p.errorFor(r)
	}
}

// cloneArgs is struct clone_args of clone3(2).
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup uint64
}

// childStack is the size of a child's own stack.
const childStack = 64 << 10

// stacks keeps the stacks of children that ended or executed their
// command, for the next: the helper's, init's and each exec'd command's.
// They are mapped outside the Go heap, so a start or an exec neither
// allocates and zeroes 64 KiB of heap nor maps a stack and faults its
// pages in anew, and a helper's end unmaps nothing (an unmap in the
// daemon's many-threaded address space flushes the other CPUs' TLBs).
// Only the pages children touched are resident.
var stacks struct {
	sync.Mutex
	free [][]byte
}

// maxFreeStacks bounds the stacks kept: enough for the starts and execs
// that run at once; more are unmapped.
const maxFreeStacks = 16

// getStack returns a stack of childStack bytes for a child, outside the
// Go heap; give it back with putStack once no child runs on it.
func getStack() ([]byte, error) {
	stacks.Lock()
	if n := len(stacks.free); n > 0 {
		s := stacks.free[n-1]
		stacks.free = stacks.free[:n-1]
		stacks.Unlock()
		return s, nil
	}
	stacks.Unlock()
	s, err := unix.Mmap(-1, 0, childStack, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_STACK)
	if err != nil {
		return nil, fmt.Errorf("child stack: %w", err)
	}
	return s, nil
}

// putStack takes back a stack from getStack once the child that ran on
// it ended or executed its command (a child that may still run on it
// would corrupt the next one's: callers that cannot tell keep it).
func putStack(s []byte) {
	if s == nil {
		return
	}
	stacks.Lock()
	if len(stacks.free) < maxFreeStacks {
		stacks.free = append(stacks.free, s)
		stacks.Unlock()
		return
	}
	stacks.Unlock()
	_ = unmapStack(s)
}

// unmapStack unmaps a stack the pool does not keep (a variable for the
// pool's test).
var unmapStack = unix.Munmap

// start forks a child that runs p, with extra clone flags (namespaces),
// and returns the child's PID and a pidfd for it. The child runs on a
// stack of its own from p's memory.
//
// With vfork, the child shares the daemon's memory and the calling thread
// is suspended until the child executed its command or exited (CLONE_VM |
// CLONE_VFORK, as os/exec does): no page tables are copied and no page
// is made copy-on-write, so neither the fork nor the child's execve pays
// for the daemon's size. Only for programs that never wait for the
// daemon: the suspended thread holds its scheduler slot, and a garbage
// collection waits for it. Without vfork the child gets a copy of the
// daemon's memory; it may then wait for the daemon. (A shared memory
// without suspending the caller crashed children now and then under the
// race detector.) The calling goroutine must have locked its OS thread,
// and p must stay alive (runtime.KeepAlive) until the child has executed
// its command or died.
func (p *program) start(flags uintptr, vfork bool) (pid, pidfd int, err error) {
	if vfork {
		flags |= unix.CLONE_VM | unix.CLONE_VFORK
	}
	return p.fork(&cloneArgs{flags: uint64(flags)})
}

// startShared forks a child that runs p on the daemon's memory alongside
// it, not as a vfork: the calling thread goes on at once. The child has a
// stack and a thread-local storage of its own (zeroed: Go code that
// looked for its goroutine there would fault in the child instead of
// using the calling thread's), and must not run Go code that needs the
// runtime, as with start. For a child that outlives the call (the exec
// helper); p must stay alive as long as the child runs.
func (p *program) startShared() (pid, pidfd int, err error) {
	tls := make([]byte, 256)
	stack, err := getStack()
	if err != nil {
		return 0, -1, fmt.Errorf("helper stack: %w", err)
	}
	p.stack = stack
	p.lasting = append(p.lasting, tls, p.steps)
	pid, pidfd, err = p.fork(&cloneArgs{flags: unix.CLONE_VM | unix.CLONE_SETTLS, tls: uint64(uintptr(unsafe.Pointer(&tls[0])) + 128)})
	if err != nil {
		putStack(stack)
		p.stack = nil
	}
	return pid, pidfd, err
}

// fork clones a child running p with args (flags and TLS; fork adds the
// stack, from p.stack or the heap, a pidfd and SIGCHLD as exit signal).
func (p *program) fork(args *cloneArgs) (pid, pidfd int, err error) {
	fd := new(int32)
	var stack unsafe.Pointer
	if p.stack != nil {
		stack = unsafe.Pointer(&p.stack[0])
	} else {
		stack = p.buf(childStack)
	}
	args.flags |= unix.CLONE_PIDFD
	args.pidfd = uint64(uintptr(unsafe.Pointer(fd)))
	args.exitSignal = uint64(unix.SIGCHLD)
	args.stack, args.stackSize = uint64(uintptr(stack)), childStack
	c := ptrTo(newChildArgs(p.steps, p.report))
	p.keep = append(p.keep, c)
	p.lasting = append(p.lasting, c)
	// Descriptors of other goroutines' forks must not leak in.
	syscall.ForkLock.Lock()
	r, errno := forkProgram(args, c)
	syscall.ForkLock.Unlock()
	runtime.KeepAlive(args)
	if errno != 0 {
		return 0, -1, fmt.Errorf("clone: %w", errno)
	}
	return int(r), int(*fd), nil
}

// childArgs is what a forked child runs.
type childArgs struct {
	steps []step
	rep   uintptr
	// entry is childMain's code address (ABIInternal), which cloneVM's
	// child calls directly: through the assembly-to-Go wrapper, a race
	// build would call the race detector first, with another thread's
	// state (or none).
	entry uintptr
}

func newChildArgs(steps []step, rep uintptr) childArgs {
	return childArgs{steps: steps, rep: rep, entry: childMainPC}
}

func ptrTo[T any](v T) *T { return &v }

// childMainPC is childMain's entry: a func value points to a word
// holding the function's code address.
var childMainPC = func() uintptr {
	f := childMain
	return **(**uintptr)(unsafe.Pointer(&f))
}()

// spawnPlan is a kSpawn step: clone3 with args, the child runs child's
// steps on a stack of its own. The parent stores the child's PID in pid
// (where the daemon can read it: the children share its memory).
type spawnPlan struct {
	args  cloneArgs
	child childArgs
	pid   int64
	// stack is the child's stack when it came from getStack
	// (spawnPooled), for putStack once the child executed or ended.
	stack []byte
}

// spawn appends a step that clones a child (clone3 with flags; with
// CLONE_VM the child shares the memory it runs on) running c, a program
// from p.child(). The parent's register holds the child's PID afterwards,
// which is also kept in the returned plan. With CLONE_PARENT the child is
// a sibling of p's process (exit signal: that of p's process).
func (p *program) spawn(name string, flags uintptr, c *program) *spawnPlan {
	return p.spawnOn(name, flags, c, p.buf(childStack), nil)
}

// spawnPooled is spawn with the child on a stack from getStack (the
// plan's stack), not on p's memory: for a child whose end or execve the
// daemon learns of, which then gives the stack back (putStack).
func (p *program) spawnPooled(name string, flags uintptr, c *program) (*spawnPlan, error) {
	stack, err := getStack()
	if err != nil {
		return nil, err
	}
	return p.spawnOn(name, flags, c, unsafe.Pointer(&stack[0]), stack), nil
}

// spawnOn appends the kSpawn step of spawn with the child on stack
// (pooled, when not nil, is that stack from getStack).
func (p *program) spawnOn(name string, flags uintptr, c *program, stack unsafe.Pointer, pooled []byte) *spawnPlan {
	sp := &spawnPlan{child: newChildArgs(c.steps, c.report), stack: pooled}
	sp.args = cloneArgs{flags: uint64(flags), stack: uint64(uintptr(stack)), stackSize: childStack}
	if flags&(unix.CLONE_PARENT|unix.CLONE_THREAD) == 0 {
		sp.args.exitSignal = uint64(unix.SIGCHLD)
	}
	p.special(name, kSpawn, unsafe.Pointer(sp))
	return sp
}

// cloneVM calls clone3(args); the child, on the stack args names, calls
// childMain(c). Implemented in assembly: the child cannot return into Go
// code on a stack that is not its own.
//
//go:noescape
func cloneVM(args *cloneArgs, size uintptr, c *childArgs) (pid uintptr, errno uintptr)

// childMain is a forked child's entry point.
//
//go:norace
//go:nocheckptr
//go:nosplit
func childMain(c *childArgs) {
	runSteps(c.steps, c.rep)
	rawExit(exitSetupFailed)
}

// forkProgram forks with clone3; the child runs c and never returns.
// Signals are blocked around the fork so that none is delivered to the
// child on a Go handler; programs clear the mask before their execve.
//
//go:norace
//go:nocheckptr
//go:nosplit
func forkProgram(args *cloneArgs, c *childArgs) (uintptr, syscall.Errno) {
	var all, old sigset
	all = sigset(^uint64(0))
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&all)), uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	pid, errno := cloneVM(args, unsafe.Sizeof(*args), c)
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	return pid, syscall.Errno(errno)
}

type sigset uint64

//go:norace
//go:nosplit
func rawExit(code uintptr) {
	for {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, code, 0, 0)
	}
}

// fail reports the step with the given id and its errno on rep and exits.
//
//go:norace
//go:nosplit
func fail(rep uintptr, id uint32, errno uintptr) {
	r := report{step: id, errno: uint32(errno)}
	syscall.RawSyscall(unix.SYS_WRITE, rep, uintptr(unsafe.Pointer(&r)), unsafe.Sizeof(r))
	rawExit(exitSetupFailed)
}

// runSteps is the child: it carries out steps and ends in a kExec step's
// execve (or exits).
//
//go:norace
//go:nocheckptr
//go:nosplit
func runSteps(steps []step, rep uintptr) {
	var reg uintptr
	for i := 0; i < len(steps); i++ {
		s := &steps[i]
		a := s.a
		if s.fdArg >= 0 {
			a[s.fdArg] = reg
		}
		switch s.kind {
		case kCall:
			r, _, e := syscall.RawSyscall6(s.trap, a[0], a[1], a[2], a[3], a[4], a[5])
			if e != 0 && e != s.ok1 && e != s.ok2 {
				fail(rep, s.id, uintptr(e))
			}
			if s.setReg {
				reg = r
			}
		case kRecvFD:
			// a[0] socket, a[1] *msghdr; ptr is the *int32 where the
			// descriptor lands (preset to -1).
			n, _, e := syscall.RawSyscall(unix.SYS_RECVMSG, a[0], a[1], unix.MSG_CMSG_CLOEXEC)
			if e == 0 && n == 0 {
				rawExit(exitSetupFailed) // the daemon gave up
			}
			if e != 0 {
				fail(rep, s.id, uintptr(e))
			}
			fd := *(*int32)(s.ptr)
			if fd < 0 {
				fail(rep, s.id, uintptr(unix.EBADF))
			}
			reg = uintptr(fd)
		case kOr16:
			*(*uint16)(s.ptr) |= uint16(a[0])
		case kStoreReg:
			*(*int32)(s.ptr) = int32(reg)
		case kAwait:
			for {
				n, _, e := syscall.RawSyscall(unix.SYS_READ, a[0], uintptr(s.ptr), 1)
				if e == unix.EINTR {
					continue
				}
				if e != 0 {
					fail(rep, s.id, uintptr(e))
				}
				if n == 0 {
					rawExit(exitSetupFailed) // the other side gave up
				}
				break
			}
		case kWaitEOF:
			for {
				n, _, e := syscall.RawSyscall(unix.SYS_READ, a[0], uintptr(s.ptr), 1)
				if e == unix.EINTR || e == 0 && n > 0 {
					continue
				}
				if e != 0 {
					fail(rep, s.id, uintptr(e))
				}
				break
			}
		case kExec:
			execCandidates((*execPlan)(s.ptr))
		case kRunWait:
			runWait((*execPlan)(s.ptr), rep, s.id)
		case kServe:
			serve((*servePlan)(s.ptr))
		case kSpawn:
			sp := (*spawnPlan)(s.ptr)
			pid, errno := cloneVM(&sp.args, unsafe.Sizeof(sp.args), &sp.child)
			if errno != 0 {
				fail(rep, s.id, errno)
			}
			sp.pid = int64(pid)
			reg = pid
		}
	}
}

// serve is an exec helper's loop (see Helper): it receives a request (the
// address of an execRequest in the memory it shares with the daemon, and
// the command's descriptors), moves the descriptors to helperFD and up,
// spawns the request's child (which executes the command), records the
// child's PID or the clone's errno in the request, closes the descriptors
// and answers with one byte: 1 when it spawned, 0 for a malformed
// request. It exits when the daemon's end of the socket is gone.
//
//go:norace
//go:nocheckptr
//go:nosplit
func serve(sp *servePlan) {
	// No pointer is stored here (newServePlan set them): a store of a
	// pointer into the heap may need the garbage collector's write
	// barrier, which uses the calling thread's runtime state this
	// process does not have.
	for {
		sp.iov.Len = 8
		sp.msg.Iovlen = 1
		sp.msg.Controllen = uint64(len(sp.ctl))
		sp.msg.Flags = 0
		n, _, e := syscall.RawSyscall(unix.SYS_RECVMSG, sp.sock, uintptr(unsafe.Pointer(&sp.msg)), unix.MSG_CMSG_CLOEXEC)
		if e == unix.EINTR {
			continue
		}
		if e != 0 || n == 0 {
			rawExit(0)
		}
		got := 0
		hdr := (*unix.Cmsghdr)(unsafe.Pointer(&sp.ctl[0]))
		if sp.msg.Controllen >= cmsgLen0 && hdr.Level == unix.SOL_SOCKET && hdr.Type == unix.SCM_RIGHTS && hdr.Len >= cmsgLen0 {
			got = int(hdr.Len-cmsgLen0) / 4
		}
		fds := (*[helperFDs]int32)(unsafe.Pointer(&sp.ctl[cmsgLen0]))
		for i := 0; i < got && i < helperFDs; i++ {
			if fd := uintptr(fds[i]); fd != helperFD+uintptr(i) {
				syscall.RawSyscall(unix.SYS_DUP3, fd, helperFD+uintptr(i), unix.O_CLOEXEC)
				syscall.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
			}
		}
		sp.answer = 0
		if n == 8 && got == helperFDs && sp.msg.Flags&unix.MSG_CTRUNC == 0 {
			r := *(**execRequest)(unsafe.Pointer(&sp.req))
			pid, errno := cloneVM(&r.args, unsafe.Sizeof(r.args), &r.child)
			r.pid = int64(pid)
			r.errno = uint64(errno)
			sp.answer = 1
		}
		for i := uintptr(0); i < helperFDs; i++ {
			syscall.RawSyscall(unix.SYS_CLOSE, helperFD+i, 0, 0)
		}
		for {
			_, _, e := syscall.RawSyscall(unix.SYS_WRITE, sp.sock, uintptr(unsafe.Pointer(&sp.answer)), 1)
			if e != unix.EINTR {
				break
			}
		}
	}
}

// execCandidates executes the first candidate that exists; it exits with
// 127 (not found) or 126 (cannot execute), as shells do.
//
//go:norace
//go:nocheckptr
//go:nosplit
func execCandidates(e *execPlan) {
	notFound := true
	for j := 0; j < len(e.paths); j++ {
		_, _, err := syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(e.paths[j])), uintptr(unsafe.Pointer(&e.argv[0])), uintptr(unsafe.Pointer(&e.envv[0])))
		if err != unix.ENOENT && err != unix.ENOTDIR {
			notFound = false
		}
	}
	if notFound && e.fallbackFD != noFD {
		if e.rep != noFD {
			// The fallback closes the report descriptor itself once
			// it is ready.
			syscall.RawSyscall(unix.SYS_FCNTL, e.rep, unix.F_SETFD, 0)
		}
		syscall.RawSyscall6(unix.SYS_EXECVEAT, e.fallbackFD, uintptr(unsafe.Pointer(e.empty)), uintptr(unsafe.Pointer(&e.fallbackArgv[0])), uintptr(unsafe.Pointer(&e.envv[0])), unix.AT_EMPTY_PATH, 0)
		notFound = false
	}
	if e.rep != noFD {
		errno := uintptr(unix.EACCES)
		if notFound {
			errno = uintptr(unix.ENOENT)
		}
		fail(e.rep, e.step, errno)
	}
	if notFound {
		if len(e.notFound) > 0 {
			syscall.RawSyscall(unix.SYS_WRITE, 2, uintptr(unsafe.Pointer(&e.notFound[0])), uintptr(len(e.notFound)))
		}
		rawExit(127)
	}
	if len(e.noExec) > 0 {
		syscall.RawSyscall(unix.SYS_WRITE, 2, uintptr(unsafe.Pointer(&e.noExec[0])), uintptr(len(e.noExec)))
	}
	rawExit(126)
}

// runWait starts e's child (see runPlan: a vfork that shares the
// memory, so nothing is copied), which executes e with an empty signal
// mask, and waits for it; anything but exit status 0 fails the step.
//
//go:norace
//go:nocheckptr
//go:nosplit
func runWait(e *execPlan, rep uintptr, id uint32) {
	pid, errno := cloneVM(&e.run.args, unsafe.Sizeof(e.run.args), &e.run.child)
	if errno != 0 {
		fail(rep, id, errno)
	}
	var status int32
	var werr syscall.Errno
	for {
		_, _, werr = syscall.RawSyscall6(unix.SYS_WAIT4, pid, uintptr(unsafe.Pointer(&status)), 0, 0, 0, 0)
		if werr != unix.EINTR {
			break
		}
	}
	if werr != 0 {
		fail(rep, id, uintptr(werr))
	}
	if status != 0 {
		fail(rep, id, 1<<16|uintptr(status))
	}
}
