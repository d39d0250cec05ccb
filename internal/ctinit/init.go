package ctinit

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DroppedCaps are removed from the bounding set of every container
// process (privileged ones too): they reach past any namespace.
var DroppedCaps = []uintptr{
	unix.CAP_SYS_MODULE, unix.CAP_SYS_RAWIO, unix.CAP_SYS_TIME, unix.CAP_MAC_ADMIN,
	unix.CAP_MAC_OVERRIDE, unix.CAP_AUDIT_CONTROL, unix.CAP_SYSLOG, unix.CAP_WAKE_ALARM,
	unix.CAP_BLOCK_SUSPEND, unix.CAP_BPF,
	unix.CAP_PERFMON,
}

// devices are bound from the host's /dev into the container's.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// masked /proc files get /dev/null bound over them; maskedDirs an empty
// read-only tmpfs; readOnly paths are bound read-only.
var (
	masked     = []string{"proc/kcore", "proc/keys", "proc/latency_stats", "proc/timer_list", "proc/sched_debug", "proc/timer_stats"}
	maskedDirs = []string{"proc/acpi", "proc/scsi", "proc/asound", "sys/firmware"}
	readOnly   = []string{"proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus", "proc/fs"}
)

// Init is a new container's init, running.
type Init struct {
	// PID is the process on the host, a child of the daemon: its PID
	// stays its own until the daemon reaps it.
	PID int
	// Stages are, with Spec.Trace, the setup's stages in order and how
	// long each took (the last ends when init was executed).
	Stages []Stage
	// Helper is the container's exec helper (Spec.Helper), nil without.
	Helper *Helper
}

// Stage is a named part of a container's setup and its duration.
type Stage struct {
	Name string
	Took time.Duration
}

// tracer records when the setup's children reach each stage: a
// clock_gettime step per stage into memory the daemon reads afterwards
// (the children borrow it; with KSM "on" init has a copy, and its stages
// stay unrecorded).
type tracer struct {
	names []string
	ts    [16]unix.Timespec
}

// mark appends a step to p that records reaching stage name (nothing when
// t is nil).
func (t *tracer) mark(p *program, name string) {
	if t == nil || len(t.names) == len(t.ts) {
		return
	}
	i := len(t.names)
	t.names = append(t.names, name)
	p.keep = append(p.keep, t)
	p.call("read the clock", unix.SYS_CLOCK_GETTIME, unix.CLOCK_MONOTONIC, uintptr(unsafe.Pointer(&t.ts[i])))
}

// stages turns the records into durations from base; the last stage ends
// at end.
func (t *tracer) stages(base, end unix.Timespec) []Stage {
	var out []Stage
	prev, name := base, "fork"
	for i, next := range t.names {
		ts := t.ts[i]
		if ts.Sec == 0 && ts.Nsec == 0 {
			break // not reached
		}
		out = append(out, Stage{Name: name, Took: time.Duration(ts.Nano() - prev.Nano())})
		prev, name = ts, next
	}
	return append(out, Stage{Name: name, Took: time.Duration(end.Nano() - prev.Nano())})
}

// StartInit starts a container's init and returns once init was executed
// (or with the setup step that failed). No process is forked with a copy
// of the daemon's memory: like os/exec, the calling thread vforks a child
// that shares the daemon's memory and runs a program of raw system calls
// prepared here (see program); the thread is suspended until the child
// exits. The child joins the container's cgroups (spec.CgroupProcs) while
// still the host's root, enters the container's user namespace
// (spec.UserNS, unless privileged) and becomes its root, enters
// spec.NetNS (or makes a new network namespace), unshares new mount, UTS,
// IPC, cgroup and PID namespaces and spawns init with CLONE_VM |
// CLONE_VFORK | CLONE_PARENT: init is PID 1 of the new PID namespace and
// a child of the daemon, and the intermediate child exits as soon as init
// executed. Init's program attaches the root (spec.RootFS), mounts /proc,
// /sys and a minimal /dev with masked and read-only paths, sets the
// hostname, brings the links up (their addresses and routes the daemon
// set beforehand, see NewNetNS), pivots into the root, detaches the
// host's mounts, drops capabilities, installs the seccomp filter and
// executes init. Nothing in the program waits for the daemon, which is
// what makes the vfork safe.
func StartInit(spec Spec) (*Init, error) {
	var t0 unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t0)
	var rep [2]int
	if err := unix.Pipe2(rep[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("report pipe: %w", err)
	}
	defer unix.Close(rep[0])
	var tr *tracer
	if spec.Trace {
		tr = &tracer{}
	}
	if spec.Helper && spec.KSM != "" && spec.KSM != "default" {
		return nil, fmt.Errorf("container init: an exec helper needs the default KSM choice, not %q", spec.KSM)
	}
	if spec.Helper && len(spec.HelperLeave) != len(spec.CgroupProcs) {
		return nil, fmt.Errorf("container init: the exec helper needs one group to return to per hierarchy (%d for %d)", len(spec.HelperLeave), len(spec.CgroupProcs))
	}
	sock, syncPipe := [2]int{-1, -1}, [2]int{-1, -1}
	if spec.Helper {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			unix.Close(rep[1])
			return nil, fmt.Errorf("exec helper socket: %w", err)
		}
		sock = [2]int{fds[0], fds[1]}
		if err := unix.Pipe2(syncPipe[:], unix.O_CLOEXEC); err != nil {
			unix.Close(rep[1])
			closeFDs(sock[:]...)
			return nil, fmt.Errorf("sync pipe: %w", err)
		}
	}
	p, h, err := initProgram(spec, rep[1], sock[1], syncPipe, tr)
	if err != nil {
		unix.Close(rep[1])
		closeFDs(sock[:]...)
		closeFDs(syncPipe[:]...)
		return nil, err
	}
	if spec.Helper {
		defer closeFDs(syncPipe[:]...) // the children have theirs
		return startWithHelper(spec, p, h, rep, sock, tr, t0)
	}
	var base, end unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &base)
	runtime.LockOSThread()
	cpid, cpidfd, err := p.start(0, true)
	runtime.UnlockOSThread()
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &end)
	unix.Close(rep[1])
	if err != nil {
		return nil, fmt.Errorf("start container init: %w", err)
	}
	unix.Close(cpidfd)
	// The intermediate child has exited (the vfork returned): reap it.
	ws := reap(cpid)
	pid := int(h.pid)
	setupErr := p.readReport(rep[0])
	runtime.KeepAlive(p) // the children ran on its memory
	if pid <= 0 {
		if setupErr == nil {
			setupErr = fmt.Errorf("the setup process ended with wait status %#x", uint32(ws))
		}
		return nil, fmt.Errorf("container setup failed: %w", setupErr)
	}
	in := &Init{PID: pid}
	if setupErr != nil {
		in.Kill()
		return nil, fmt.Errorf("container setup failed: %w", setupErr)
	}
	if tr != nil {
		var t1 unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t1)
		in.Stages = append([]Stage{{Name: "build", Took: time.Duration(base.Nano() - t0.Nano())}}, tr.stages(base, end)...)
		in.Stages = append(in.Stages, Stage{Name: "reap", Took: time.Duration(t1.Nano() - end.Nano())})
	}
	return in, nil
}

// startWithHelper is StartInit's second half with an exec helper: the
// first child runs alongside this thread (startShared) and stays; init
// runs once the report pipe reaches its end (the helper closes its copy
// after init executed).
func startWithHelper(spec Spec, p *program, h *spawnPlan, rep [2]int, sock [2]int, tr *tracer, t0 unix.Timespec) (*Init, error) {
	var base, end unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &base)
	runtime.LockOSThread()
	cpid, cpidfd, err := p.startShared()
	runtime.UnlockOSThread()
	unix.Close(rep[1])
	unix.Close(sock[1])
	if err != nil {
		unix.Close(sock[0])
		return nil, fmt.Errorf("start container init: %w", err)
	}
	sockf, err := pollable(sock[0], "exec helper socket")
	if err != nil {
		_ = unix.PidfdSendSignal(cpidfd, unix.SIGKILL, nil, 0)
		reap(cpid)
		unix.Close(cpidfd)
		// The helper is reaped: it spawns nothing more, and the PID of
		// an init it spawned is in h.pid.
		if pid := int(h.pid); pid > 0 {
			(&Init{PID: pid}).Kill()
		}
		putStack(p.stack)
		putStack(h.stack)
		return nil, err
	}
	// The whole program stays alive until init runs (report's end);
	// then only what the helper still uses.
	hp := &Helper{sock: sock[0], sockf: sockf, pid: cpid, pidfd: cpidfd, joins: len(spec.CgroupProcs), keep: p.lasting, stack: p.stack}
	// The daemon's read end, on the poller: rep[0] is closed by
	// StartInit, so a duplicate.
	var setupErr error
	if fd, err := unix.Dup(rep[0]); err != nil {
		setupErr = p.readReport(rep[0])
	} else if f, err := pollable(fd, "report pipe"); err != nil {
		setupErr = p.readReport(rep[0])
	} else {
		setupErr = p.readReportFile(f)
		f.Close()
	}
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &end)
	pid := int(h.pid)
	if setupErr == nil && pid <= 0 {
		setupErr = fmt.Errorf("the setup process ended before it started init")
	}
	if setupErr != nil {
		hp.Close()
		// The helper is reaped: it spawns nothing more, and the PID of
		// an init it spawned is in h.pid now.
		if pid = int(h.pid); pid > 0 {
			(&Init{PID: pid}).Kill()
		}
		putStack(h.stack) // no child runs on it any more
		return nil, fmt.Errorf("container setup failed: %w", setupErr)
	}
	putStack(h.stack) // init executed
	in := &Init{PID: pid, Helper: hp}
	if tr != nil {
		in.Stages = append([]Stage{{Name: "build", Took: ns(t0, base)}}, tr.stages(base, end)...)
	}
	runtime.KeepAlive(p) // init executed: its program, stack and buffers may go
	return in, nil
}

func closeFDs(fds ...int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// Kill kills init and reaps it (before that, its PID cannot name another
// process), and ends the exec helper.
func (in *Init) Kill() {
	_ = unix.Kill(in.PID, unix.SIGKILL)
	reap(in.PID)
	in.Helper.Close()
}

// atFDCWD is AT_FDCWD as a system call argument.
const atFDCWD = ^uintptr(99) // -100

// initProgram builds the intermediate child's steps (p) and init's (the
// child it spawns, whose PID lands in h.pid); rep is the report pipe's
// write end.
func initProgram(spec Spec, rep, sock int, syncPipe [2]int, tr *tracer) (p *program, h *spawnPlan, err error) {
	p = newProgram()
	keep := []int{rep, spec.Console, spec.Null, spec.RootFS}
	if spec.Self >= 0 {
		keep = append(keep, spec.Self)
	}
	if !spec.Privileged {
		keep = append(keep, spec.UserNS)
	}
	if spec.NetNS >= 0 {
		keep = append(keep, spec.NetNS)
	}
	keep = append(keep, spec.CgroupProcs...)
	nCg := len(spec.CgroupProcs)
	if spec.Helper {
		keep = append(keep, sock)
		keep = append(keep, spec.HelperLeave...)
		keep = append(keep, syncPipe[0], syncPipe[1])
	}
	// Above the helper's fixed descriptor numbers (helperJoin and up).
	in := p.useFDsFrom(helperJoin+8, keep...)
	p.report = in[0]
	console, null, root, self := in[1], in[2], in[3], noFD
	next := 4
	if spec.Self >= 0 {
		self = in[next]
		next++
	}
	tr.mark(p, "cgroups")
	one := p.cstr("0")
	cgStart := len(in) - nCg
	if spec.Helper {
		cgStart -= 1 + len(spec.HelperLeave) + 2
	}
	for _, fd := range in[cgStart : cgStart+nCg] {
		p.call("join the container's cgroups", unix.SYS_WRITE, fd, one, 1)
		if !spec.Helper { // the helper's commands join them too
			p.call("join the container's cgroups", unix.SYS_CLOSE, fd)
		}
	}
	tr.mark(p, "userns")
	if !spec.Privileged {
		p.call("enter the container's user namespace", unix.SYS_SETNS, in[next], unix.CLONE_NEWUSER)
		p.call("close the user namespace descriptor", unix.SYS_CLOSE, in[next])
		next++
		confineCreds(p)
	}
	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWCGROUP | unix.CLONE_NEWPID)
	if spec.NetNS >= 0 {
		p.call("enter the container's network namespace", unix.SYS_SETNS, in[next], unix.CLONE_NEWNET)
		p.call("close the network namespace descriptor", unix.SYS_CLOSE, in[next])
	} else {
		flags |= unix.CLONE_NEWNET
	}
	// The cgroups just joined become the root of the new cgroup
	// namespace.
	tr.mark(p, "unshare")
	p.call("create the container's namespaces", unix.SYS_UNSHARE, flags)
	if spec.Helper {
		// Once, for the helper and (inherited) init.
		tr.mark(p, "confine")
		confineNoMask(p, spec.KSM)
	}
	tr.mark(p, "spawn")

	c := p.child()
	tr.mark(c, "root")
	c.call("set up standard descriptors", unix.SYS_DUP3, null, 0, 0)
	c.call("set up standard descriptors", unix.SYS_DUP3, console, 1, 0)
	c.call("set up standard descriptors", unix.SYS_DUP3, console, 2, 0)
	c.call("new session", unix.SYS_SETSID)
	// Die with the daemon thread while the setup runs.
	c.call("parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL))
	c.mount("make mounts private", "", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	c.call("attach root file system "+spec.Root, unix.SYS_MOVE_MOUNT, root, c.cstr(""), atFDCWD, c.cstr("/tmp"), unix.MOVE_MOUNT_F_EMPTY_PATH)
	// Work relative to the new root from here on: its host path may not
	// be searchable by the guest's ids.
	c.call("enter root file system", unix.SYS_FCHDIR, root)
	c.call("close root file system descriptor", unix.SYS_CLOSE, root)
	tr.mark(c, "mounts")
	mountSpecial(c)
	tr.mark(c, "net")
	host := append([]byte(spec.Hostname), 0)
	c.keep = append(c.keep, host)
	c.call("set hostname", unix.SYS_SETHOSTNAME, uintptr(unsafe.Pointer(&host[0])), uintptr(len(spec.Hostname)))
	if err := setupNet(c, spec); err != nil {
		return nil, nil, err
	}
	tr.mark(c, "pivot")
	c.call("pivot_root", unix.SYS_PIVOT_ROOT, c.cstr("."), c.cstr("."))
	c.call("detach the host's mounts", unix.SYS_UMOUNT2, c.cstr("."), unix.MNT_DETACH)
	c.call("change to /", unix.SYS_CHDIR, c.cstr("/"))
	c.call("clear parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, 0)
	if spec.Helper {
		// Confined already, by the helper it was spawned from.
		c.call("clear the signal mask", unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(c.buf(8)), 0, 8)
	} else {
		tr.mark(c, "confine")
		confine(c, spec.KSM)
	}
	tr.mark(c, "exec")

	argv := spec.Init
	if len(argv) == 0 {
		argv = []string{"/sbin/init"}
	}
	env := append(append([]string(nil), DefaultEnv...), spec.Env...)
	e, err := c.execPlan(candidates(argv[0], env), argv, env)
	if err != nil {
		return nil, nil, err
	}
	if len(spec.Init) == 0 && self != noFD {
		// An image without an init (a debootstrap minbase): berth's
		// own minimal init keeps the container up and reaps orphans.
		e.fallbackFD = self
		// It gets the report descriptor, to close once it handles
		// signals (before, a shutdown signal would be lost).
		if e.fallbackArgv, err = syscall.SlicePtrFromStrings([]string{"berth", MiniInitMode, strconv.Itoa(int(c.report))}); err != nil {
			return nil, nil, err
		}
	}
	e.rep, e.step = c.report, uint32(len(*c.names))
	c.special("execute init "+argv[0], kExec, unsafe.Pointer(e))

	// Init is PID 1 of the new PID namespace and a child of the daemon
	// (CLONE_PARENT); this process waits until it executed init (or
	// failed) and exits.
	if spec.Helper {
		// Init runs alongside (no vfork): this process closes its copy
		// of the report descriptor at once, so the daemon learns that
		// init runs when init's copy closes (its execve), and only then,
		// woken by the end of the sync pipe likewise, turns into the
		// helper.
		rest := in[cgStart+nCg:]
		syncR, syncW := rest[1+len(spec.HelperLeave)], rest[2+len(spec.HelperLeave)]
		if h, err = p.spawnPooled("start init", unix.CLONE_VM|unix.CLONE_PARENT, c); err != nil {
			return nil, nil, err
		}
		p.call("close the sync pipe's write end", unix.SYS_CLOSE, syncW)
		p.call("close the report descriptor", unix.SYS_CLOSE, p.report)
		// From here on the helper runs after the daemon learnt that init
		// runs: what these steps use is kept (program.lasting).
		wait := p.buf(1)
		p.lasting = append(p.lasting, wait)
		p.special("wait until init runs", kWaitEOF, wait, syncR)
		p.call("close the sync pipe", unix.SYS_CLOSE, syncR)
		helperSteps(p, rest[0], null, rest[1:1+len(spec.HelperLeave)], in[cgStart:cgStart+nCg])
		return p, h, nil
	}
	h = p.spawn("start init", spawnFlags(spec.KSM)|unix.CLONE_PARENT, c)
	tr.mark(p, "exit")
	p.call("exit", unix.SYS_EXIT_GROUP, 0)
	return p, h, nil
}

// spawnFlags are the clone flags of a child that runs confine(ksm) and
// executes a container's process: a vfork sharing the daemon's memory,
// except for KSM "on". PR_SET_MEMORY_MERGE marks the memory (mm) itself,
// which execve passes on to the new program's: set in a child sharing the
// daemon's memory it would make the daemon and everything it starts
// later mergeable. That child gets a copy of the memory instead.
func spawnFlags(ksm string) uintptr {
	if ksm == "on" {
		return 0
	}
	return unix.CLONE_VM | unix.CLONE_VFORK
}

// NewUserNS makes a user namespace whose ids 0 to size-1 are host ids
// base to base+size-1 and returns a descriptor of it; the namespace lives
// on as long as the descriptor (and what uses it) does. A namespace's id
// maps are written once, from outside, by a process privileged over its
// parent namespace, so two children share the work, neither with a copy
// of the daemon's memory: the vforked first child opens its own /proc
// directory, spawns a helper (sharing the memory; the daemon thread stays
// suspended until both are gone), unshares a user namespace and signals
// the helper, which, still the host's root, writes the first child's
// uid_map and gid_map through that directory and passes its ns/user back
// over a socket.
func NewUserNS(base, size int) (int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(fds[0])
	var sync [2]int
	if err := unix.Pipe2(sync[:], unix.O_CLOEXEC); err != nil {
		unix.Close(fds[1])
		return -1, fmt.Errorf("pipe: %w", err)
	}
	p := newProgram()
	in := p.useFDs(fds[1], sync[0], sync[1])
	sock, syncR, syncW := in[0], in[1], in[2]
	p.report = sock
	// The first child's /proc directory, on the descriptor after the
	// kept ones (the helper inherits it).
	self := in[2] + 1
	p.call("open /proc/self", unix.SYS_OPENAT, atFDCWD, p.cstr("/proc/self"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC).setReg = true
	p.call("open /proc/self", unix.SYS_DUP3, 0, self, unix.O_CLOEXEC)
	p.onReg(0)

	h := p.child()
	// If the first child dies, so does the helper (which it would
	// otherwise leave waiting, holding the daemon's memory); end of file
	// on the pipe (every write end closed) ends it too.
	h.call("parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL))
	h.call("close the pipe's write end", unix.SYS_CLOSE, syncW)
	h.special("wait for the user namespace", kAwait, h.buf(1), syncR)
	m := []byte(fmt.Sprintf("0 %d %d\n", base, size))
	h.keep = append(h.keep, m)
	for _, f := range []string{"uid_map", "gid_map"} {
		h.call("write the user namespace's "+f, unix.SYS_OPENAT, self, h.cstr(f), unix.O_WRONLY|unix.O_CLOEXEC).setReg = true
		h.call("write the user namespace's "+f, unix.SYS_WRITE, 0, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)))
		h.onReg(0)
		h.call("write the user namespace's "+f, unix.SYS_CLOSE, 0)
		h.onReg(0)
	}
	h.call("open the user namespace", unix.SYS_OPENAT, self, h.cstr("ns/user"), unix.O_RDONLY|unix.O_CLOEXEC).setReg = true
	sendFD(h, sock, "pass the user namespace")
	h.call("exit", unix.SYS_EXIT_GROUP, 0)

	// The helper shares the memory but is not a vfork: it waits for this
	// child, which waits for it below.
	p.spawn("start the id map writer", unix.CLONE_VM, h)
	p.call("create a user namespace", unix.SYS_UNSHARE, unix.CLONE_NEWUSER)
	p.call("signal the id map writer", unix.SYS_WRITE, syncW, uintptr(p.buf(1)), 1)
	status := p.buf(4)
	p.call("wait for the id map writer", unix.SYS_WAIT4, 0, uintptr(status), 0, 0)
	p.onReg(0) // the helper's PID, from the spawn
	p.call("exit", unix.SYS_EXIT_GROUP, 0)

	return vforkForFD(p, fds[0], "create a user namespace", fds[1], sync[0], sync[1])
}

// vforkForFD runs p in a vforked child (see program.start), reaps it and
// returns the descriptor it passed on sock (recvFD), or the failure it
// reported there. closeAfter are the daemon's copies of descriptors only
// the child needs.
func vforkForFD(p *program, sock int, what string, closeAfter ...int) (int, error) {
	runtime.LockOSThread()
	pid, pidfd, err := p.start(0, true)
	runtime.UnlockOSThread()
	for _, fd := range closeAfter {
		unix.Close(fd)
	}
	if err != nil {
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	unix.Close(pidfd)
	ws := reap(pid)
	fd, err := recvFD(sock, p)
	runtime.KeepAlive(p)
	if err != nil {
		return -1, fmt.Errorf("%s: %w (wait status %#x)", what, err, uint32(ws))
	}
	return fd, nil
}

// reap waits for child pid to exit and returns its wait status.
func reap(pid int) unix.WaitStatus {
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
			return ws
		}
	}
}

// sendFD appends steps that pass the descriptor in the register over
// sock (SCM_RIGHTS), for recvFD.
func sendFD(p *program, sock uintptr, name string) {
	iov := &unix.Iovec{Base: (*byte)(p.buf(1)), Len: 1}
	p.keep = append(p.keep, iov)
	ctl := p.buf(unix.CmsgSpace(4))
	hdr := (*unix.Cmsghdr)(ctl)
	hdr.Level, hdr.Type = unix.SOL_SOCKET, unix.SCM_RIGHTS
	hdr.SetLen(unix.CmsgLen(4))
	p.special(name, kStoreReg, unsafe.Add(ctl, unix.CmsgLen(0)))
	msg := &unix.Msghdr{Iov: iov, Iovlen: 1, Control: (*byte)(ctl), Controllen: uint64(unix.CmsgSpace(4))}
	p.call(name, unix.SYS_SENDMSG, sock, p.ptr(msg, unsafe.Pointer(msg)), 0)
}

// NewNetNS makes a network namespace owned by the user namespace userns
// (-1: the host's) and returns a descriptor of it, so that NICs can be
// moved in before the container starts, and a NETLINK_ROUTE socket made
// inside it, over which the daemon configures them without entering the
// namespace (the socket carries its namespace and its maker's
// credentials). A vforked child creates both and passes them back over a
// socket.
func NewNetNS(userns int) (netns, rtnl int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(fds[0])
	p := newProgram()
	keep := []int{fds[1]}
	if userns >= 0 {
		keep = append(keep, userns)
	}
	in := p.useFDs(keep...)
	p.report = in[0]
	if userns >= 0 {
		p.call("enter the container's user namespace", unix.SYS_SETNS, in[1], unix.CLONE_NEWUSER)
	}
	p.call("create a network namespace", unix.SYS_UNSHARE, unix.CLONE_NEWNET)
	p.call("open the network namespace", unix.SYS_OPENAT, atFDCWD, p.cstr("/proc/self/ns/net"), unix.O_RDONLY|unix.O_CLOEXEC).setReg = true
	sendFD(p, in[0], "pass the network namespace")
	p.call("open a netlink socket in the network namespace", unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE).setReg = true
	sendFD(p, in[0], "pass the netlink socket")
	p.call("exit", unix.SYS_EXIT_GROUP, 0)
	netns, err = vforkForFD(p, fds[0], "create a network namespace", fds[1])
	if err != nil {
		return -1, -1, err
	}
	rtnl, err = recvFD(fds[0], p)
	if err != nil {
		unix.Close(netns)
		return -1, -1, fmt.Errorf("create a network namespace: %w", err)
	}
	return netns, rtnl, nil
}

// recvFD receives the descriptor a child of p passed on sock, or the
// failure it reported there instead.
func recvFD(sock int, p *program) (int, error) {
	buf := make([]byte, 8)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
	if err != nil {
		return -1, fmt.Errorf("no descriptor came back: %w", err)
	}
	if oobn == 0 {
		if n == len(buf) {
			return -1, p.errorFor(*(*report)(unsafe.Pointer(&buf[0])))
		}
		return -1, fmt.Errorf("no descriptor came back")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("bad control message (%v)", err)
	}
	got, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(got) != 1 {
		return -1, fmt.Errorf("bad descriptor message (%v)", err)
	}
	return got[0], nil
}

// writeFile writes b to an existing file with one write(2).
func writeFile(path string, b []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, b)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// MiniInitMode is the hidden berth command that runs MiniInit.
const MiniInitMode = "__ct-miniinit"

// mountSpecial builds /proc, /sys and /dev in the current directory (the
// new root). It runs before the root switch: in a user namespace, proc
// and sysfs may only be mounted while a fully visible instance is in the
// mount namespace.
func mountSpecial(p *program) {
	mkdir := func(d string) {
		p.call("create /"+d, unix.SYS_MKDIRAT, atFDCWD, p.cstr(d), 0o755)
		p.tolerate(unix.EEXIST, 0)
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run"} {
		mkdir(d)
	}
	nodev := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	p.mount("mount proc on /proc", "proc", "proc", "proc", nodev, "")
	p.mount("mount sysfs on /sys", "sysfs", "sys", "sysfs", nodev|unix.MS_RDONLY, "")
	p.mount("mount tmpfs on /dev", "tmpfs", "dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=65536k")
	for _, d := range devices {
		p.call("create /dev/"+d, unix.SYS_MKNODAT, atFDCWD, p.cstr("dev/"+d), unix.S_IFREG|0o644, 0)
		p.mount("bind /dev/"+d, "/dev/"+d, "dev/"+d, "", unix.MS_BIND, "")
	}
	mkdir("dev/pts")
	mkdir("dev/shm")
	p.mount("mount devpts", "devpts", "dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
	p.mount("mount /dev/shm", "shm", "dev/shm", "tmpfs", nodev, "mode=1777,size=65536k")
	for _, l := range [][2]string{{"ptmx", "pts/ptmx"}, {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
		{"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}} {
		p.call("create /dev/"+l[0], unix.SYS_SYMLINKAT, p.cstr(l[1]), atFDCWD, p.cstr("dev/"+l[0]))
	}
	// Paths the kernel does not have are skipped (ENOENT).
	for _, m := range masked {
		p.mount("mask /"+m, "/dev/null", m, "", unix.MS_BIND, "")
		p.tolerate(unix.ENOENT, 0)
	}
	for _, m := range maskedDirs {
		p.mount("mask /"+m, "tmpfs", m, "tmpfs", unix.MS_RDONLY|nodev, "size=0")
		p.tolerate(unix.ENOENT, 0)
	}
	for _, m := range readOnly {
		p.mount("bind /"+m, m, m, "", unix.MS_BIND|unix.MS_REC, "")
		p.tolerate(unix.ENOENT, 0)
		p.mount("make /"+m+" read-only", "", m, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|nodev, "")
		p.tolerate(unix.ENOENT, 0)
	}
}

// setupNet brings lo and the NICs up (SIOCSIFFLAGS); the daemon gave the
// NICs their addresses and routes already (over a netlink socket made in
// the namespace by NewNetNS).
func setupNet(p *program, spec Spec) error {
	p.call("network socket", unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0).setReg = true
	links := []string{"lo"}
	for _, n := range spec.Nets {
		links = append(links, n.Name)
	}
	for _, name := range links {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return fmt.Errorf("interface %q: %w", name, err)
		}
		a := p.ptr(ifr, unsafe.Pointer(ifr))
		p.call("bring "+name+" up", unix.SYS_IOCTL, 0, unix.SIOCGIFFLAGS, a)
		p.onReg(0)
		// The flags are the first field of the union after the name.
		p.special("bring "+name+" up", kOr16, unsafe.Add(unsafe.Pointer(ifr), unix.IFNAMSIZ), unix.IFF_UP)
		p.call("bring "+name+" up", unix.SYS_IOCTL, 0, unix.SIOCSIFFLAGS, a)
		p.onReg(0)
	}
	p.call("close network socket", unix.SYS_CLOSE, 0)
	p.onReg(0)
	return nil
}

// DefaultEnv is the environment of init and of exec'd commands.
var DefaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=linux", "container=berth", "HOME=/root"}

// MiniInit is the init of containers whose image has none: it reaps
// orphaned children and exits on SIGTERM, SIGPWR, SIGINT or SIGUSR2
// (clean shutdown). It never returns. args are MiniInitMode's arguments:
// the descriptor to close once the signals are handled, which tells the
// daemon the container runs (a PID namespace's init loses the signals it
// has no handler for).
func MiniInit(args []string) {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, unix.SIGTERM, unix.SIGPWR, unix.SIGINT, unix.SIGUSR2, unix.SIGCHLD)
	if len(args) > 0 {
		if fd, err := strconv.Atoi(args[0]); err == nil && fd > 2 {
			unix.Close(fd)
		}
	}
	for s := range sig {
		if s != unix.SIGCHLD {
			_ = unix.Kill(-1, unix.SIGTERM)
			// A raw exit: nothing to flush, and no exit hooks to run.
			unix.Exit(0)
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
