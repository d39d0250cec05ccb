package ctinit

import (
	"path/filepath"
	"strings"

	"fmt"
	"github.com/berthhq/berth/internal/seccomp"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Namespaces are joined in this order: the user namespace first (it grants
// the capabilities the others need), the mount namespace last but one.
var joinOrder = []struct {
	name string
	flag int
}{
	{"user", unix.CLONE_NEWUSER},
	{"mnt", unix.CLONE_NEWNS},
	{"uts", unix.CLONE_NEWUTS},
	{"ipc", unix.CLONE_NEWIPC},
	{"net", unix.CLONE_NEWNET},
	{"cgroup", unix.CLONE_NEWCGROUP},
}

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
}

// Join runs spec.Argv inside the container and returns its exit status as
// a shell would (128+signal when killed). It must run in a helper process
// of its own (the berth hidden command), never in the daemon: it locks its
// thread into the container's PID namespace and forks a single-threaded
// child with the raw clone system call (setns of a user or mount namespace
// is refused to multi-threaded processes). Between fork and execve the
// child makes nothing but raw system calls on memory prepared beforehand:
// it joins the namespaces, becomes the guest's root, drops the capability
// bounding set like init did, installs the seccomp filter and executes the
// command, trying each directory of PATH in turn as execvp does. No berth
// code runs inside the container. stdin, stdout and stderr are inherited.
func Join(spec JoinSpec) (int, error) {
	runtime.LockOSThread()
	if len(spec.Argv) == 0 {
		return 0, fmt.Errorf("no command given")
	}
	if spec.StartTime != 0 {
		st, err := StartTime(spec.PID)
		if err != nil || st != spec.StartTime {
			return 0, fmt.Errorf("container init %d is gone", spec.PID)
		}
	}
	pidns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/pid", spec.PID), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open PID namespace of %d: %w", spec.PID, err)
	}
	var c childPlan
	for _, ns := range joinOrder {
		if ns.name == "user" && spec.Privileged {
			continue
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", spec.PID, ns.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("open %s namespace of %d: %w", ns.name, spec.PID, err)
		}
		c.nsfds = append(c.nsfds, uintptr(fd))
	}
	env := append(append([]string(nil), DefaultEnv...), spec.Env...)
	if c.envv, err = syscall.SlicePtrFromStrings(env); err != nil {
		return 0, err
	}
	if c.argv, err = syscall.SlicePtrFromStrings(spec.Argv); err != nil {
		return 0, err
	}
	for _, p := range candidates(spec.Argv[0], env) {
		bp, err := syscall.BytePtrFromString(p)
		if err != nil {
			return 0, err
		}
		c.paths = append(c.paths, bp)
	}
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if c.cwd, err = syscall.BytePtrFromString(cwd); err != nil {
		return 0, err
	}
	c.caps = DroppedCaps
	c.filter = seccomp.Program()
	c.fprog = unix.SockFprog{Len: uint16(len(c.filter)), Filter: &c.filter[0]}
	switch spec.KSM {
	case "on":
		c.mergeAny = true
	case "off":
		c.noMerge = seccomp.NoMergeProgram()
		c.noMergeProg = unix.SockFprog{Len: uint16(len(c.noMerge)), Filter: &c.noMerge[0]}
	}
	c.msgNotFound = []byte("berth exec: " + spec.Argv[0] + ": command not found in the container\n")
	c.msgNoExec = []byte("berth exec: " + spec.Argv[0] + ": cannot execute in the container\n")
	// The PID namespace applies to children of this (locked) thread.
	if err := unix.Setns(pidns, unix.CLONE_NEWPID); err != nil {
		return 0, fmt.Errorf("join PID namespace: %w", err)
	}
	pid, errno := forkJoin(&c)
	runtime.KeepAlive(&c)
	if errno != 0 {
		return 0, fmt.Errorf("fork into container: %w", errno)
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("wait for command: %w", err)
		}
		switch {
		case ws.Exited():
			code := ws.ExitStatus()
			if code >= joinFailBase && code < joinFailBase+len(joinStepNames) {
				return 0, fmt.Errorf("entering the container failed at %s", joinStepNames[code-joinFailBase])
			}
			return code, nil
		case ws.Signaled():
			return 128 + int(ws.Signal()), nil
		}
	}
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

// childPlan is everything the forked child needs, prepared in advance.
type childPlan struct {
	nsfds       []uintptr
	argv, envv  []*byte
	paths       []*byte
	cwd         *byte
	caps        []uintptr
	filter      []unix.SockFilter
	fprog       unix.SockFprog
	mergeAny    bool              // PR_SET_MEMORY_MERGE (ksm=1)
	noMerge     []unix.SockFilter // the no-merge filter (ksm=0), or nil
	noMergeProg unix.SockFprog
	msgNotFound []byte
	msgNoExec   []byte
}

// Exit codes of the forked child when a step fails before the command
// runs; chosen above what shells use. 126 and 127 keep their shell
// meanings (cannot execute, not found).
const joinFailBase = 240

var joinStepNames = []string{"setns", "setgroups", "setresgid", "setresuid", "chdir", "capabilities", "seccomp"}

//go:norace
//go:nosplit
func rawExit(code uintptr) { syscall.RawSyscall(unix.SYS_EXIT_GROUP, code, 0, 0) }

// forkJoin forks; the child carries out c and executes the command.
// Between fork and execve the child may only make raw system calls: it is
// a copy of one thread of a Go process without a runtime.
//
//go:norace
//go:nocheckptr
func forkJoin(c *childPlan) (int, syscall.Errno) {
	// Block signals around the fork so that none is delivered to the
	// child on a Go handler; the child clears the mask before execve.
	var all, old, none unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&all)), uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	pid, _, errno := syscall.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if errno != 0 || pid != 0 {
		syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
		return int(pid), errno
	}
	// Child.
	for i := 0; i < len(c.nsfds); i++ {
		if _, _, e := syscall.RawSyscall(unix.SYS_SETNS, c.nsfds[i], 0, 0); e != 0 {
			rawExit(joinFailBase + 0)
		}
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		rawExit(joinFailBase + 1)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_SETRESGID, 0, 0, 0); e != 0 {
		rawExit(joinFailBase + 2)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); e != 0 {
		rawExit(joinFailBase + 3)
	}
	// Die with the helper (set after the credential change, which would
	// clear it).
	syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0)
	if _, _, e := syscall.RawSyscall(unix.SYS_CHDIR, uintptr(unsafe.Pointer(c.cwd)), 0, 0); e != 0 {
		rawExit(joinFailBase + 4)
	}
	for i := 0; i < len(c.caps); i++ {
		if _, _, e := syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c.caps[i], 0, 0, 0, 0); e != 0 && e != unix.EINVAL {
			rawExit(joinFailBase + 5)
		}
	}
	if c.mergeAny {
		// Kernels before 6.4 refuse it (EINVAL); init then ran without
		// it too.
		syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_MEMORY_MERGE, 1, 0, 0, 0, 0)
	}
	if _, _, e := syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		rawExit(joinFailBase + 6)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&c.fprog))); e != 0 {
		rawExit(joinFailBase + 6)
	}
	if c.noMerge != nil {
		if _, _, e := syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&c.noMergeProg))); e != 0 {
			rawExit(joinFailBase + 6)
		}
	}
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&none)), 0, 8, 0, 0)
	notFound := true
	for i := 0; i < len(c.paths); i++ {
		_, _, e := syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(c.paths[i])), uintptr(unsafe.Pointer(&c.argv[0])), uintptr(unsafe.Pointer(&c.envv[0])))
		if e != unix.ENOENT && e != unix.ENOTDIR {
			notFound = false
		}
	}
	if notFound {
		syscall.RawSyscall(unix.SYS_WRITE, 2, uintptr(unsafe.Pointer(&c.msgNotFound[0])), uintptr(len(c.msgNotFound)))
		rawExit(127)
	}
	syscall.RawSyscall(unix.SYS_WRITE, 2, uintptr(unsafe.Pointer(&c.msgNoExec[0])), uintptr(len(c.msgNoExec)))
	rawExit(126)
	return 0, 0
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
