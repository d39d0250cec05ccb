package ctinit

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
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

// Init is a new container's first process while the daemon sets the
// container up around it.
type Init struct {
	// PID is the process on the host; PidFD refers to it.
	PID, PidFD int
	sock       int
	p          *program
}

// StartInit forks the container's first process into new mount, PID,
// UTS, IPC and network namespaces (and a new user namespace mapping
// spec.IDBase, unless privileged), with the raw technique of Join: the
// child runs a program of raw system calls prepared here. Its first step
// waits for Run to hand over the root file system, so the daemon can put
// it into its cgroups, id-map the image against its user namespace and
// move NICs into its network namespace first. The child then makes the
// cgroups it was put in the root of a new cgroup namespace, attaches the
// root, mounts /proc, /sys and a minimal /dev with masked and read-only
// paths, sets the hostname, brings the links up and configures addresses
// (with spec.IPTool, before the root switch), pivots into the root and
// detaches the host's mounts, drops capabilities, installs the seccomp
// filter and executes init. Call Close when done, Kill on failure.
func StartInit(spec Spec) (*Init, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(fds[1])
	p, err := initProgram(spec, fds[1])
	if err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET)
	if !spec.Privileged {
		flags |= unix.CLONE_NEWUSER
	}
	runtime.LockOSThread()
	pid, pidfd, err := p.start(flags, false)
	runtime.UnlockOSThread()
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("start container init: %w", err)
	}
	in := &Init{PID: pid, PidFD: pidfd, sock: fds[0], p: p}
	if !spec.Privileged {
		m := fmt.Sprintf("0 %d %d\n", spec.IDBase, spec.IDSize)
		for _, f := range []string{"uid_map", "gid_map"} {
			if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, f), []byte(m), 0); err != nil {
				in.Kill()
				return nil, fmt.Errorf("write the container's %s: %w", f, err)
			}
		}
	}
	return in, nil
}

// Run hands the root mount fd to the waiting child and returns once it
// executed init, or with the step that failed.
func (in *Init) Run(rootFD int) error {
	if err := unix.Sendmsg(in.sock, []byte{1}, unix.UnixRights(rootFD), nil, 0); err != nil {
		return fmt.Errorf("send the root file system to the container's init: %w", err)
	}
	if err := in.p.readReport(in.sock); err != nil {
		// The child is exiting; the caller kills and reaps it (Kill),
		// which keeps its memory alive until then.
		return fmt.Errorf("container setup failed: %w", err)
	}
	// End of file: the child executed init (close-on-exec descriptors
	// close after execve switched to the new program's memory).
	runtime.KeepAlive(in.p)
	return nil
}

// Kill kills the child and reaps it; it also closes like Close.
func (in *Init) Kill() {
	_ = unix.PidfdSendSignal(in.PidFD, unix.SIGKILL, nil, 0)
	var ws unix.WaitStatus
	_, _ = unix.Wait4(in.PID, &ws, 0, nil)
	runtime.KeepAlive(in.p) // the child ran on it until it died
	in.Close()
}

// Close releases the setup socket. The pidfd stays open for the caller.
func (in *Init) Close() {
	if in.sock >= 0 {
		unix.Close(in.sock)
		in.sock = -1
	}
}

// atFDCWD is AT_FDCWD as a system call argument.
const atFDCWD = ^uintptr(99) // -100

// initProgram builds the init child's steps; sock is its end of the
// setup socket.
func initProgram(spec Spec, sock int) (*program, error) {
	p := &program{}
	keep := []int{sock, spec.Console, spec.Null}
	if spec.Self >= 0 {
		keep = append(keep, spec.Self)
	}
	in := p.useFDs(keep...)
	p.report = in[0]
	p.call("set up standard descriptors", unix.SYS_DUP3, in[2], 0, 0)
	p.call("set up standard descriptors", unix.SYS_DUP3, in[1], 1, 0)
	p.call("set up standard descriptors", unix.SYS_DUP3, in[1], 2, 0)
	p.call("new session", unix.SYS_SETSID)
	p.call("parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL))

	// Wait for the root file system (and with it the go-ahead).
	iov := &unix.Iovec{Base: (*byte)(p.buf(16)), Len: 16}
	p.keep = append(p.keep, iov)
	ctl := p.buf(unix.CmsgSpace(4))
	fdSlot := unsafe.Add(ctl, unix.CmsgLen(0))
	*(*int32)(fdSlot) = -1
	msg := &unix.Msghdr{Iov: iov, Iovlen: 1, Control: (*byte)(ctl), Controllen: uint64(unix.CmsgSpace(4))}
	p.special("receive the root file system", kRecvFD, fdSlot, in[0], p.ptr(msg, unsafe.Pointer(msg)))

	confineCreds(p)
	p.call("parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL))
	// The daemon has put this process into the container's cgroups: make
	// them the root of its view.
	p.call("new cgroup namespace", unix.SYS_UNSHARE, unix.CLONE_NEWCGROUP)
	p.mount("make mounts private", "", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	p.call("attach root file system "+spec.Root, unix.SYS_MOVE_MOUNT, 0, p.cstr(""), atFDCWD, p.cstr("/tmp"), unix.MOVE_MOUNT_F_EMPTY_PATH)
	p.onReg(0)
	// Work relative to the new root from here on: its host path may not
	// be searchable by the guest's ids.
	p.call("enter root file system", unix.SYS_FCHDIR, 0)
	p.onReg(0)
	p.call("close root file system descriptor", unix.SYS_CLOSE, 0)
	p.onReg(0)
	mountSpecial(p)
	host := append([]byte(spec.Hostname), 0)
	p.keep = append(p.keep, host)
	p.call("set hostname", unix.SYS_SETHOSTNAME, uintptr(unsafe.Pointer(&host[0])), uintptr(len(spec.Hostname)))
	if err := setupNet(p, spec); err != nil {
		return nil, err
	}
	p.call("pivot_root", unix.SYS_PIVOT_ROOT, p.cstr("."), p.cstr("."))
	p.call("detach the host's mounts", unix.SYS_UMOUNT2, p.cstr("."), unix.MNT_DETACH)
	p.call("change to /", unix.SYS_CHDIR, p.cstr("/"))
	p.call("clear parent death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, 0)
	confine(p, spec.KSM)

	argv := spec.Init
	if len(argv) == 0 {
		argv = []string{"/sbin/init"}
	}
	env := append(append([]string(nil), DefaultEnv...), spec.Env...)
	e, err := p.execPlan(candidates(argv[0], env), argv, env)
	if err != nil {
		return nil, err
	}
	if len(spec.Init) == 0 && spec.Self >= 0 {
		// An image without an init (a debootstrap minbase): berth's
		// own minimal init keeps the container up and reaps orphans.
		e.fallbackFD = in[3]
		// It gets the report descriptor, to close once it handles
		// signals (before, a shutdown signal would be lost).
		if e.fallbackArgv, err = syscall.SlicePtrFromStrings([]string{"berth", MiniInitMode, strconv.Itoa(int(p.report))}); err != nil {
			return nil, err
		}
	}
	e.rep, e.step = p.report, len(p.steps)
	p.special("execute init "+argv[0], kExec, unsafe.Pointer(e))
	return p, nil
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

// setupNet brings lo and the NICs up (SIOCSIFFLAGS) and configures their
// addresses and default routes with the host's ip(8), which is still
// reachable before the root switch.
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
	tool := spec.IPTool
	if tool == "" {
		tool = "/sbin/ip"
	}
	ip := func(args ...string) error {
		e, err := p.execPlan([]string{tool}, append([]string{"ip"}, args...), []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"})
		if err != nil {
			return err
		}
		p.special("ip "+strings.Join(args, " ")+" (its output is in the console log)", kRunWait, unsafe.Pointer(e))
		return nil
	}
	for _, n := range spec.Nets {
		if n.Address != "" {
			if err := ip("addr", "add", n.Address, "dev", n.Name); err != nil {
				return err
			}
		}
		if n.Gateway != "" {
			if err := ip("route", "add", "default", "via", n.Gateway, "dev", n.Name); err != nil {
				return err
			}
		}
	}
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
