package ctinit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/seccomp"
)

// joinFlags are the namespaces an exec'd command joins with one setns on
// init's pidfd (the kernel enters the user namespace first and checks
// the others with the credentials it gives); the PID namespace is entered
// by the forking thread, for its children.
const joinFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// JoinSpec says which container to enter and what to run there.
type JoinSpec struct {
	// PID is the container's init on the host.
	PID int
	// StartTime is init's start time (field 22 of /proc/PID/stat), which
	// guards against a recycled PID; 0 skips the check.
	StartTime uint64
	// Privileged containers have no user namespace to join.
	Privileged bool
	// Argv and Env are the command to run inside; Argv[0] is looked up in
	// the container's PATH.
	Argv []string
	Env  []string
	// Cwd is the working directory inside ("/" when empty).
	Cwd string
	// KSM is the container's KSM choice as its init got it (Spec.KSM),
	// so that the command is as mergeable as the container's other
	// processes.
	KSM string
	// Cgroups are the container's cgroup directories, one per hierarchy;
	// the command joins each.
	Cgroups []string
	// Stdio are the descriptors that become the command's 0, 1 and 2.
	Stdio [3]int
	// TTY makes Stdio[0] (a terminal) the controlling terminal of the
	// command's new session.
	TTY bool
	// Stages, when not nil, receives the stages of the exec and their
	// durations (see Init.Stages), for the debug log.
	Stages *[]Stage
}

// Join runs spec.Argv inside the container and returns its exit status as
// a shell would (128+signal when killed); it kills the command when ctx
// ends. No helper process is involved and no daemon thread changes
// namespace: a locked thread vforks a first child that shares the daemon's
// memory and makes nothing but raw system calls prepared beforehand (see
// program). It enters the container's PID namespace (which applies to its
// children) and spawns the command's process with CLONE_VM | CLONE_VFORK |
// CLONE_PARENT (a child of the daemon, in the container's PID namespace),
// then exits once that one executed the command. The command's process
// joins the container's cgroups, enters its other namespaces with one
// setns on a pidfd of init (the kernel takes the user namespace first),
// becomes the guest's root, drops the capability bounding set like init,
// sets no_new_privs, installs the seccomp filter and executes the command,
// trying each directory of PATH in turn as execvp does. The thread stays
// locked while the command runs (the command dies with it: its
// parent-death signal) and then goes back to the scheduler. No berth code
// runs inside the container.
func Join(ctx context.Context, spec JoinSpec) (int, error) {
	if len(spec.Argv) == 0 {
		return 0, fmt.Errorf("no command given")
	}
	type result struct {
		code int
		err  error
	}
	started := make(chan int, 1) // the pidfd, or -1
	done := make(chan result, 1)
	go func() {
		// Locked while the command runs: the command is the thread's
		// child (CLONE_PARENT) and dies with it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		code, err := join(spec, started)
		done <- result{code, err}
	}()
	pidfd := <-started
	if pidfd < 0 {
		r := <-done
		return r.code, r.err
	}
	// Closed here, after the last signal through it (join's end does
	// not close it: the number could be another descriptor's by then).
	defer unix.Close(pidfd)
	select {
	case r := <-done:
		return r.code, r.err
	case <-ctx.Done():
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		r := <-done
		return r.code, r.err
	}
}

// join runs on a locked thread; it sends a pidfd of the command's process
// (or -1) on started, for the caller to close, then waits for the
// command.
func join(spec JoinSpec, started chan<- int) (code int, err error) {
	sent := false
	defer func() {
		if !sent {
			started <- -1
		}
	}()
	var t0, base, end, exited unix.Timespec
	var tr *tracer
	if spec.Stages != nil {
		tr = &tracer{}
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t0)
	}
	pidfd, err := unix.PidfdOpen(spec.PID, 0)
	if err != nil {
		return 0, fmt.Errorf("container init %d is gone: %w", spec.PID, err)
	}
	defer unix.Close(pidfd)
	// Checked after opening the pidfd: the PID may have been recycled
	// before.
	if spec.StartTime != 0 {
		st, err := StartTime(spec.PID)
		if err != nil || st != spec.StartTime {
			return 0, fmt.Errorf("container init %d is gone", spec.PID)
		}
	}
	fds := []int{spec.Stdio[0], spec.Stdio[1], spec.Stdio[2], pidfd}
	var rep [2]int
	if err := unix.Pipe2(rep[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("report pipe: %w", err)
	}
	defer unix.Close(rep[0])
	fds = append(fds, rep[1])
	p, h, err := joinProgram(spec, fds, tr)
	if err != nil {
		unix.Close(rep[1])
		return 0, err
	}
	if tr != nil {
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &base)
	}
	cpid, cpidfd, err := p.start(0, true)
	if tr != nil {
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &end)
	}
	unix.Close(rep[1])
	if err != nil {
		return 0, fmt.Errorf("fork into container: %w", err)
	}
	unix.Close(cpidfd)
	reap(cpid) // it exited once the command's process executed (or failed)
	pid := int(h.pid)
	if pid <= 0 {
		runtime.KeepAlive(p)
		if err := p.readReport(rep[0]); err != nil {
			return 0, fmt.Errorf("entering the container failed: %w", err)
		}
		return 0, fmt.Errorf("entering the container failed: the first child ended without starting the command")
	}
	// The command's process is this daemon's unreaped child: its PID is
	// its own until the wait below.
	hpidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		reap(pid)
		return 0, fmt.Errorf("pidfd of the command: %w", err)
	}
	started <- hpidfd
	sent = true
	setupErr := p.readReport(rep[0])
	ws := reap(pid)
	runtime.KeepAlive(p) // the children ran on its memory until execve or exit
	if tr != nil {
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &exited)
		*spec.Stages = append([]Stage{{Name: "build", Took: time.Duration(base.Nano() - t0.Nano())}}, tr.stages(base, end)...)
		*spec.Stages = append(*spec.Stages, Stage{Name: "run", Took: time.Duration(exited.Nano() - end.Nano())})
	}
	if setupErr != nil {
		return 0, fmt.Errorf("entering the container failed: %w", setupErr)
	}
	return exitCode(ws)
}

// exitCode is a command's exit status as a shell reports it (128+signal
// when killed).
func exitCode(ws unix.WaitStatus) (int, error) {
	switch {
	case ws.Exited():
		return ws.ExitStatus(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	}
	return 0, fmt.Errorf("command ended with wait status %#x", uint32(ws))
}

// joinProgram builds the steps of the first child (p) and of the
// command's process it spawns (whose PID lands in h.pid). fds are stdin,
// stdout, stderr, a pidfd of the container's init and the report pipe's
// write end.
func joinProgram(spec JoinSpec, fds []int, tr *tracer) (p *program, h *spawnPlan, err error) {
	p = newProgram()
	in := p.useFDs(fds...)
	p.report = in[len(in)-1]
	// The command's process is created in the container's PID namespace.
	p.call("join the container's PID namespace", unix.SYS_SETNS, in[3], unix.CLONE_NEWPID)
	tr.mark(p, "spawn")

	c := p.child()
	for i := 0; i < 3; i++ {
		c.call("set up standard descriptors", unix.SYS_DUP3, in[i], uintptr(i), 0)
	}
	c.call("new session", unix.SYS_SETSID)
	if spec.TTY {
		c.call("set controlling terminal", unix.SYS_IOCTL, 0, unix.TIOCSCTTY, 0)
	}
	tr.mark(c, "cgroups")
	one := c.cstr("0")
	for _, dir := range spec.Cgroups {
		name := "join cgroup " + dir
		c.call(name, unix.SYS_OPENAT, atFDCWD, c.cstr(filepath.Join(dir, "cgroup.procs")), unix.O_WRONLY|unix.O_CLOEXEC).setReg = true
		c.call(name, unix.SYS_WRITE, 0, one, 1)
		c.onReg(0)
		c.call(name, unix.SYS_CLOSE, 0)
		c.onReg(0)
	}
	flags := uintptr(joinFlags)
	if !spec.Privileged {
		flags |= unix.CLONE_NEWUSER
	}
	tr.mark(c, "setns")
	c.call("join the container's namespaces", unix.SYS_SETNS, in[3], flags)
	confineCreds(c)
	// Die with the daemon thread that waits (its parent: CLONE_PARENT;
	// set after the credential change, which would clear it).
	c.call("parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL))
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	c.call("change to "+cwd, unix.SYS_CHDIR, c.cstr(cwd))
	tr.mark(c, "confine")
	confine(c, spec.KSM)
	tr.mark(c, "exec")
	if err := execCommand(c, spec); err != nil {
		return nil, nil, err
	}

	h = p.spawn("start the command", spawnFlags(spec.KSM)|unix.CLONE_PARENT, c)
	tr.mark(p, "exit")
	p.call("exit", unix.SYS_EXIT_GROUP, 0)
	return p, h, nil
}

// execCommand appends the step that executes spec.Argv (looked up in the
// container's PATH) with spec.Env after the default environment.
func execCommand(c *program, spec JoinSpec) error {
	env := append(append([]string(nil), DefaultEnv...), spec.Env...)
	e, err := c.execPlan(candidates(spec.Argv[0], env), spec.Argv, env)
	if err != nil {
		return err
	}
	e.notFound = []byte("berth exec: " + spec.Argv[0] + ": command not found in the container\n")
	e.noExec = []byte("berth exec: " + spec.Argv[0] + ": cannot execute in the container\n")
	c.special("execute "+spec.Argv[0], kExec, unsafe.Pointer(e))
	return nil
}

// candidates lists the paths execvp would try for file.
func candidates(file string, env []string) []string {
	if strings.Contains(file, "/") {
		return []string{file}
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	var out []string
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		out = append(out, dir+"/"+file)
	}
	return out
}

// confineCreds makes the child the container's root (uid and gid 0, no
// supplementary groups) in its current user namespace.
func confineCreds(p *program) {
	p.call("setgroups", unix.SYS_SETGROUPS, 0, 0)
	p.call("setresgid", unix.SYS_SETRESGID, 0, 0, 0)
	p.call("setresuid", unix.SYS_SETRESUID, 0, 0, 0)
}

// confine applies the KSM choice (see Spec.KSM), drops DroppedCaps from
// the bounding set, sets no_new_privs, installs the seccomp filter (and
// for KSM "off" the no-merge filter) and clears the signal mask: the last
// steps before execve.
func confine(p *program, ksm string) {
	confineNoMask(p, ksm)
	p.call("clear the signal mask", unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(p.buf(8)), 0, 8)
}

// confineNoMask is confine without clearing the signal mask: for the exec
// helper, which keeps every signal blocked (its children clear the mask).
func confineNoMask(p *program, ksm string) {
	switch ksm {
	case "on", "off":
		// Kernels before 6.4 refuse it (EINVAL): only memory that
		// programs mark mergeable themselves can be merged there.
		v := uintptr(0)
		if ksm == "on" {
			v = 1
		}
		p.call("set PR_SET_MEMORY_MERGE (ksm)", unix.SYS_PRCTL, unix.PR_SET_MEMORY_MERGE, v, 0, 0, 0)
		p.tolerate(unix.EINVAL, 0)
	}
	for _, c := range DroppedCaps {
		p.call(fmt.Sprintf("drop capability %d", c), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c)
		p.tolerate(unix.EINVAL, 0)
	}
	p.call("set no_new_privs", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	installFilter(p, "install the seccomp filter", seccomp.Program())
	if ksm == "off" {
		installFilter(p, "install the no-merge seccomp filter (ksm=0)", seccomp.NoMergeProgram())
	}
}

// installFilter adds a step that loads filter as a seccomp filter; the
// program keeps the filter alive until the child has run.
func installFilter(p *program, name string, filter []unix.SockFilter) {
	fprog := &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	p.keep = append(p.keep, filter)
	p.call(name, unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, p.ptr(fprog, unsafe.Pointer(fprog)))
}

// StartTime returns field 22 of /proc/PID/stat: the process's start time in
// clock ticks since boot, which with the PID identifies a process.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return ParseStartTime(b)
}

// ParseStartTime extracts the start time from the contents of a
// /proc/PID/stat file; the command name in parentheses may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func ParseStartTime(stat []byte) (uint64, error) {
	i := lastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat line")
	}
	fields := splitFields(stat[i+1:])
	// After the name: state is field 3, starttime field 22.
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed stat line: %d fields after the name", len(fields))
	}
	return strconv.ParseUint(string(fields[19]), 10, 64)
}

// State returns the state letter of /proc/PID/stat (R, S, Z, …).
func State(pid int) (byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := lastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("malformed stat line")
	}
	return b[i+2], nil
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func splitFields(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i, c := range b {
		if c == ' ' || c == '\n' || c == '\t' {
			if start >= 0 {
				out = append(out, b[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		out = append(out, b[start:])
	}
	return out
}
