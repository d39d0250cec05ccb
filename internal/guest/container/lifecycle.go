package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/ctinit"
)

// The fast paths of start and stop: what this daemon knows in memory
// (its own children, containers it cleaned up) saves reading and probing
// files, and waiting for a process goes through the runtime's poller.
// After a daemon restart nothing is known, and everything is read from the
// pidfile, /proc and the cgroup tree as before.

// pidfd is a process descriptor (opened non-blocking) on the runtime's
// poller: waiting for the process takes no thread, and the descriptor is
// safe to signal through while another goroutine closes it.
type pidfd struct {
	f  *os.File
	rc syscall.RawConn
}

func openPidfd(pid int) (*pidfd, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "pidfd "+strconv.Itoa(pid))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &pidfd{f: f, rc: rc}, nil
}

// signal sends sig; a process already reaped is no error.
func (p *pidfd) signal(sig unix.Signal) error {
	var serr error
	if err := p.rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); err != nil {
		return nil // closed: reaped
	}
	if errors.Is(serr, unix.ESRCH) {
		return nil
	}
	return serr
}

// wait blocks until the process has exited (reap: and reaps it, which
// only its parent may), ctx ends or the deadline (zero: none) passes.
func (p *pidfd) wait(ctx context.Context, reap bool, deadline time.Time) error {
	if !deadline.IsZero() {
		if err := p.f.SetReadDeadline(deadline); err != nil {
			return err
		}
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = p.f.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	var werr error
	err := p.rc.Read(func(fd uintptr) bool {
		if reap {
			var info unix.Siginfo
			werr = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG, nil)
			return werr != nil || info.Signo != 0
		}
		// Readable once the process exited.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, perr := unix.Poll(fds, 0)
		werr = perr
		return perr != nil && !errors.Is(perr, unix.EINTR) || n > 0
	})
	switch {
	case err == nil:
		if errors.Is(werr, unix.EINTR) {
			return p.wait(ctx, reap, deadline)
		}
		return werr
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errTimeout
	}
	return err
}

func (p *pidfd) close() { _ = p.f.Close() }

// child is the init of a container that this daemon started (its
// child: CLONE_PARENT keeps ctinit's helper out of the line), reaped by a
// goroutine parked on the poller.
type child struct {
	rs   runtimeState
	p    *pidfd
	done chan struct{} // closed once init is reaped
	// helper is the container's exec helper (guarded by Driver.mu),
	// ended once init is reaped.
	helper *ctinit.Helper
}

// liveChild returns container id's init if this daemon started it and it
// was not reaped yet.
func (d *Driver) liveChild(id int) *child {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.children[id]
}

// knownClean reports whether this daemon removed every runtime leftover of
// container id (pidfile, cgroups, veths) and has not started it since.
func (d *Driver) knownClean(id int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.clean[id]
}

func (d *Driver) setClean(id int, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.clean == nil {
		d.clean = map[int]bool{}
	}
	if on {
		d.clean[id] = true
	} else {
		delete(d.clean, id)
	}
}

// precleanup removes what a former run of container id may have left,
// unless this daemon knows there is nothing (it cleaned up after that run
// itself); a daemon that just started knows nothing and looks.
func (d *Driver) precleanup(id int) {
	if d.knownClean(id) {
		return
	}
	d.cleanup(id)
}

// recordStart writes the pidfile of container id, whose init pid just
// started (lower: the image's rootfs), and has this daemon reap init when
// it exits.
func (d *Driver) recordStart(id, pid int, lower string, s settings, ksmChoice string) error {
	stat, err := readProcStat(pid)
	if err != nil {
		return fmt.Errorf("container init exited at once: see %s", d.consoleLog(id))
	}
	st, err := ctinit.ParseStartTime(stat)
	if err != nil {
		return fmt.Errorf("container init %d: %w", pid, err)
	}
	rs := runtimeState{PID: pid, StartTime: st, HaltSignal: int(d.haltSignalOf(lower, d.upper(id), s.Init)),
		Privileged: s.Privileged, Started: time.Now().Unix(), KSM: ksmChoice, NICs: []int{}}
	for _, n := range s.Nets {
		rs.NICs = append(rs.NICs, n.Index)
	}
	b, _ := json.Marshal(rs)
	if err := writePidfile(d.pidFile(id), b); err != nil {
		return err
	}
	d.setClean(id, false)
	d.watch(id, rs)
	return nil
}

// writePidfile writes a new pidfile in place: open, write, close. Neither
// a temporary file and rename nor fsync are needed. The caller holds the
// container's lock and removed any old pidfile; a reader that sees the
// file empty or half-written cannot parse it (no prefix of a JSON object
// is one) and takes the container for stopped, as before the file
// existed. A daemon that crashes before the write completes leaves such
// a file, or none, and the next daemon's cleanup kills what runs in the
// container's cgroups. After a power loss no container runs, and a lost
// or old pidfile reads as stopped (the start time no longer matches).
func writePidfile(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	n, err := unix.Write(fd, data)
	if err == nil && n != len(data) {
		err = errors.New("short write")
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		_ = unix.Unlink(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// haltKey identifies an image's init program: the image's rootfs, the
// program's path in it and the inode and change time of that path.
type haltKey struct {
	lower, path string
	ino         uint64
	ctime       unix.Timespec
}

// haltSignalOf is haltSignal, remembered per image init program: an
// image's rootfs does not change under a name, and a replaced program
// has another inode or change time. An init program in the container's
// own layer is looked at every time.
func (d *Driver) haltSignalOf(lower, upper string, initArgv []string) unix.Signal {
	path := "/sbin/init"
	if len(initArgv) > 0 {
		path = initArgv[0]
	}
	var st unix.Stat_t
	if unix.Lstat(filepath.Join(upper, path), &st) == nil {
		return haltSignal(lower, upper, initArgv)
	}
	if unix.Lstat(filepath.Join(lower, path), &st) != nil {
		return haltSignal(lower, upper, initArgv)
	}
	k := haltKey{lower: lower, path: path, ino: st.Ino, ctime: st.Ctim}
	d.mu.Lock()
	sig, ok := d.halts[k]
	d.mu.Unlock()
	if ok {
		return sig
	}
	sig = haltSignal(lower, upper, initArgv)
	d.mu.Lock()
	if d.halts == nil {
		d.halts = map[haltKey]unix.Signal{}
	}
	d.halts[k] = sig
	d.mu.Unlock()
	return sig
}

// readPidfile reads container id's pidfile.
func readPidfile(path string) (runtimeState, bool) {
	b, err := readSmall(path)
	if err != nil {
		return runtimeState{}, false
	}
	var rs runtimeState
	if json.Unmarshal(b, &rs) != nil || rs.PID <= 1 {
		return runtimeState{}, false
	}
	return rs, true
}

// readProcStat reads /proc/PID/stat.
func readProcStat(pid int) ([]byte, error) {
	return readSmall("/proc/" + strconv.Itoa(pid) + "/stat")
}

// readSmall reads a small regular or /proc file with plain system calls
// (os.ReadFile adds a stat, a poller registration attempt and a read that
// returns nothing).
func readSmall(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 1024)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, buf[:n]...)
		if n < len(buf) {
			// A short read is the end: of a regular file, or of a
			// proc file that is generated whole (such as stat).
			return out, nil
		}
	}
}

// procAlive reports whether process pid is the one started at startTime
// and has not exited (a zombie has).
func procAlive(pid int, startTime uint64) bool {
	b, err := readProcStat(pid)
	if err != nil {
		return false
	}
	st, err := ctinit.ParseStartTime(b)
	if err != nil || st != startTime {
		return false
	}
	i := len(b) - 1
	for i >= 0 && b[i] != ')' {
		i--
	}
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// ownedBy returns a test of whether a process runs in container id of
// this data directory: its root is an overlayfs whose upper layer is the
// container's.
func (d *Driver) ownedBy(id int) func(pid int) bool {
	want := "upperdir=" + d.upper(id)
	return func(pid int) bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			sep := slices.Index(f, "-")
			if len(f) < 5 || f[4] != "/" || sep < 0 || len(f) < sep+4 || f[sep+1] != "overlay" {
				continue
			}
			for _, o := range strings.Split(f[sep+3], ",") {
				if o == want {
					return true
				}
			}
		}
		return false
	}
}

// deleteLink deletes network interface name over netlink (the kernel
// deletes a veth's peer with it); a missing one is not an error. The
// container's network namespace going away deletes its veths too, but
// in the background, so a stop finds them still there.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// watch reaps container id's init (this daemon's child) when it exits.
func (d *Driver) watch(id int, rs runtimeState) {
	p, err := openPidfd(rs.PID)
	if err != nil {
		d.o.Log.Warn("container init: no pidfd, it is reaped by the next daemon", "guest", id, "pid", rs.PID, "err", err)
		return
	}
	c := &child{rs: rs, p: p, done: make(chan struct{})}
	d.mu.Lock()
	if d.children == nil {
		d.children = map[int]*child{}
	}
	d.children[id] = c
	d.mu.Unlock()
	go func() {
		for {
			err := p.wait(context.Background(), true, time.Time{})
			if err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		d.mu.Lock()
		if d.children[id] == c {
			delete(d.children, id)
		}
		h := c.helper
		c.helper = nil
		var closed chan struct{}
		if h != nil {
			// The helper holds the container's mount namespace now:
			// a new overlayfs waits for its end (waitReleased).
			closed = make(chan struct{})
			d.helperClosing[id] = closed
		}
		d.mu.Unlock()
		p.close()
		close(c.done)
		// After done: a stop need not wait for it (the helper is in
		// none of the container's cgroups).
		if h != nil {
			h.Close()
			d.mu.Lock()
			if d.helperClosing[id] == closed {
				delete(d.helperClosing, id)
			}
			d.mu.Unlock()
			close(closed)
		}
	}()
}
