package ctinit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/seccomp"
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

// RunInit is the init helper: it reads the spec from the socket on fd
// sockFD, sets up the container from inside its new namespaces and
// executes the container's init. It returns only on failure, after
// reporting the error to the daemon.
func RunInit(sockFD int) error {
	runtime.LockOSThread()
	// fd 4 is the berth binary the daemon executed us through.
	unix.CloseOnExec(sockFD + 1)
	// The daemon learns that init runs when the socket closes on exec.
	unix.CloseOnExec(sockFD)
	spec, rootFD, err := recvSpec(sockFD)
	if err == nil {
		err = setup(spec, rootFD)
	}
	if err == nil {
		err = execInit(spec, sockFD)
	}
	report(sockFD, err)
	return err
}

func setup(spec Spec, rootFD int) error {
	// The daemon has put this process into the container's cgroups: make
	// them the root of its view.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("new cgroup namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.MoveMount(rootFD, "", unix.AT_FDCWD, "/tmp", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach root file system %s: %w", spec.Root, err)
	}
	// Work relative to the new root from here on: its host path may not
	// be searchable by the guest's ids.
	if err := unix.Fchdir(rootFD); err != nil {
		return fmt.Errorf("enter root file system: %w", err)
	}
	unix.Close(rootFD)
	const root = "."
	if err := mountSpecial(root, spec.Privileged); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := setupNet(spec); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's mounts: %w", err)
	}
	return unix.Chdir("/")
}

func mkdirs(root string, dirs ...string) {
	for _, d := range dirs {
		_ = os.MkdirAll(filepath.Join(root, d), 0o755)
	}
}

// mountSpecial builds /proc, /sys and /dev under root. It runs before the
// root switch: in a user namespace, proc and sysfs may only be mounted
// while a fully visible instance is in the mount namespace.
func mountSpecial(root string, privileged bool) error {
	mkdirs(root, "proc", "sys", "dev", "tmp", "run")
	type m struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}
	nodev := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	for _, x := range []m{
		{"proc", "proc", "proc", nodev, ""},
		{"sysfs", "sys", "sysfs", nodev | unix.MS_RDONLY, ""},
		{"tmpfs", "dev", "tmpfs", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=755,size=65536k"},
	} {
		if err := unix.Mount(x.src, filepath.Join(root, x.dst), x.fs, x.flags, x.data); err != nil {
			return fmt.Errorf("mount %s on /%s: %w", x.fs, x.dst, err)
		}
	}
	dev := filepath.Join(root, "dev")
	for _, d := range devices {
		p := filepath.Join(dev, d)
		if f, err := os.Create(p); err == nil {
			f.Close()
		}
		if err := unix.Mount("/dev/"+d, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	mkdirs(dev, "pts", "shm")
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	if err := unix.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", nodev, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	for name, target := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("create /dev/%s: %w", name, err)
		}
	}
	for _, p := range masked {
		full := filepath.Join(root, p)
		if !exists(full) {
			continue
		}
		if err := unix.Mount("/dev/null", full, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask /%s: %w", p, err)
		}
	}
	for _, p := range maskedDirs {
		full := filepath.Join(root, p)
		if !exists(full) {
			continue
		}
		if err := unix.Mount("tmpfs", full, "tmpfs", unix.MS_RDONLY|nodev, "size=0"); err != nil {
			return fmt.Errorf("mask /%s: %w", p, err)
		}
	}
	for _, p := range readOnly {
		full := filepath.Join(root, p)
		if !exists(full) {
			continue
		}
		if err := unix.Mount(full, full, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind /%s: %w", p, err)
		}
		if err := unix.Mount("", full, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|nodev, ""); err != nil {
			return fmt.Errorf("make /%s read-only: %w", p, err)
		}
	}
	return nil
}

// setupNet brings lo up and configures the NICs with the host's ip(8),
// which is still reachable before the root switch.
func setupNet(spec Spec) error {
	if err := linkUp("lo"); err != nil {
		return err
	}
	for _, n := range spec.Nets {
		if err := linkUp(n.Name); err != nil {
			return err
		}
		if n.Address != "" {
			if err := ip(spec.IPTool, "addr", "add", n.Address, "dev", n.Name); err != nil {
				return err
			}
		}
		if n.Gateway != "" {
			if err := ip(spec.IPTool, "route", "add", "default", "via", n.Gateway, "dev", n.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

func ip(tool string, args ...string) error {
	if tool == "" {
		tool = "ip"
	}
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// linkUp sets IFF_UP on an interface with an ioctl.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}

// confineKSM applies the container's KSM choice around Confine: "on" sets
// PR_SET_MEMORY_MERGE before (the filter of "off" would refuse it), "off"
// clears it and adds the no-merge filter after. Both are inherited by
// every process init starts.
func confineKSM(choice string) error {
	switch choice {
	case "on":
		if err := ksm.SetProcessMerge(true); errors.Is(err, ksm.ErrMergeAnyUnsupported) {
			// Only memory programs mark themselves merges; `berth ksm
			// status` shows "whole process: no".
			fmt.Fprintf(os.Stderr, "berth: ksm=1: %v; only memory that programs mark mergeable themselves can be merged\n", err)
		} else if err != nil {
			return fmt.Errorf("ksm=1: %w", err)
		}
	case "off":
		if err := ksm.SetProcessMerge(false); err != nil && !errors.Is(err, ksm.ErrMergeAnyUnsupported) {
			return fmt.Errorf("ksm=0: %w", err)
		}
	}
	if err := Confine(); err != nil {
		return err
	}
	if choice == "off" {
		if err := seccomp.InstallNoMerge(); err != nil {
			return fmt.Errorf("ksm=0: %w", err)
		}
	}
	return nil
}

// Confine drops the capabilities in DroppedCaps from the bounding set,
// installs the seccomp filter and clears the signal mask. It must run on
// the locked OS thread that then calls execve.
func Confine() error {
	for _, c := range DroppedCaps {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if err := seccomp.Install(); err != nil {
		return err
	}
	var empty unix.Sigset_t
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&empty)), 0, 8, 0, 0); e != 0 {
		return fmt.Errorf("clear signal mask: %w", e)
	}
	signal.Reset()
	return nil
}

// lookPath finds file in PATH inside the (already switched) root.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if st, err := os.Stat(file); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s: not an executable file in the container", file)
		}
		return file, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: command not found in the container's PATH (%s)", file, path)
}

// DefaultEnv is the environment of init and of exec'd commands.
var DefaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=linux", "container=berth", "HOME=/root"}

func execInit(spec Spec, sockFD int) error {
	argv := spec.Init
	if len(argv) == 0 {
		argv = []string{"/sbin/init"}
	}
	env := append(append([]string(nil), DefaultEnv...), spec.Env...)
	path, err := lookPath(argv[0], env)
	if err != nil && len(spec.Init) == 0 {
		// An image without an init (a debootstrap minbase): berth's
		// own minimal init keeps the container up and reaps orphans.
		if err := confineKSM(spec.KSM); err != nil {
			return err
		}
		// No exec closes the socket here: close it (and the binary's
		// descriptor) so the daemon sees init running.
		unix.Close(sockFD)
		unix.Close(sockFD + 1)
		MiniInit()
	}
	if err != nil {
		return err
	}
	if err := confineKSM(spec.KSM); err != nil {
		return err
	}
	return fmt.Errorf("execute init %s: %w", path, syscall.Exec(path, argv, env))
}

// MiniInit is the init of containers whose image has none: it reaps
// orphaned children and exits on SIGTERM, SIGPWR, SIGINT or SIGUSR2
// (clean shutdown). It never returns.
func MiniInit() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, unix.SIGTERM, unix.SIGPWR, unix.SIGINT, unix.SIGUSR2, unix.SIGCHLD)
	for s := range sig {
		if s != unix.SIGCHLD {
			_ = unix.Kill(-1, unix.SIGTERM)
			os.Exit(0)
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
