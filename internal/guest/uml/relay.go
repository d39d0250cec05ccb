package uml

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/atomicfile"
)

// RelayCommand is the hidden berth subcommand that runs RelayMain.
const RelayCommand = "__uml-relay"

// Files in a guest's directory that the relay owns.
const (
	consoleLog  = "console.log"
	consoleSock = "console.sock"
	pidFile     = "uml.pid"
	exitFile    = "exit-status"
	// maxLog is where the console log starts over, so a chatty guest
	// cannot fill the disk.
	maxLog = 16 << 20
	// replay is how much of the log a newly attached client gets first.
	replay = 8 << 10
)

// RelayMain is the console relay, a small process that berth starts for
// each UML guest and that outlives the daemon: it runs the UML kernel with
// a pseudo-terminal as its main console (con0=fd:0,fd:1), records the
// console to console.log, lets clients attach through console.sock and
// writes the kernel's PID to uml.pid. Its arguments are
// "DIR UID GID KERNEL ARGS...", UID and GID -1 for no change. It returns
// the exit code.
func RelayMain(args []string, stderr io.Writer) int {
	if err := relay(args); err != nil {
		fmt.Fprintf(stderr, "berth uml relay: %v\n", err)
		return 1
	}
	return 0
}

func relay(args []string) error {
	if len(args) < 4 {
		return errors.New("usage: " + RelayCommand + " DIR UID GID KERNEL [ARGS...]")
	}
	dir := args[0]
	uid, err1 := strconv.Atoi(args[1])
	gid, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("bad uid/gid %q %q", args[1], args[2])
	}
	if err := os.Chdir(dir); err != nil {
		return err
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	// SIGTERM ends the guest (berth sends it when a boot fails, maybe
	// before uml.pid names the kernel); the relay exits after it.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	master, slave, err := openPTY()
	if err != nil {
		return err
	}
	defer master.Close()
	if uid >= 0 {
		slave.Chown(uid, gid)
	}
	logf, err := os.OpenFile(consoleLog, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	os.Remove(consoleSock)
	ln, err := net.Listen("unix", consoleSock)
	if err != nil {
		return err
	}
	defer os.Remove(consoleSock)
	defer ln.Close()
	os.Chmod(consoleSock, 0o600)

	// A panicking UML kernel aborts: no core file of the guest's whole
	// memory in its directory (or the host's crash collector).
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	cmd := exec.Command(args[3], args[4:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=/tmp"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if uid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logf, "berth: cannot start %s: %v\n", args[3], err)
		return err
	}
	slave.Close()
	go func() {
		<-term
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}()
	if err := atomicfile.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		cmd.Process.Kill()
		return err
	}
	os.Remove(exitFile)

	var mu sync.Mutex
	clients := map[net.Conn]bool{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			// Replay the end of the log so a client that attaches
			// late sees what it missed.
			if b, err := os.ReadFile(consoleLog); err == nil {
				if len(b) > replay {
					b = b[len(b)-replay:]
				}
				c.Write(b)
			}
			clients[c] = true
			mu.Unlock()
			go func() {
				io.Copy(master, c)
				mu.Lock()
				delete(clients, c)
				mu.Unlock()
				c.Close()
			}()
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		var written int64
		for {
			n, err := master.Read(buf)
			if n > 0 {
				if written += int64(n); written > maxLog {
					logf.Truncate(0)
					logf.Seek(0, io.SeekStart)
					written = int64(n)
				}
				logf.Write(buf[:n])
				mu.Lock()
				for c := range clients {
					if _, err := c.Write(buf[:n]); err != nil {
						c.Close()
						delete(clients, c)
					}
				}
				mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	err = cmd.Wait()
	status := "0"
	if err != nil {
		status = err.Error()
	}
	reapGroup(cmd.Process.Pid)
	atomicfile.WriteFile(exitFile, []byte(status+"\n"), 0o644)
	os.Remove(pidFile)
	master.Close()
	<-done
	mu.Lock()
	for c := range clients {
		c.Close()
	}
	mu.Unlock()
	return nil
}

// openPTY opens a pseudo-terminal pair with the slave in raw mode, so the
// guest's console output passes unchanged and input is not echoed twice.
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("ptsname: %w", err)
	}
	s, err := os.OpenFile(filepath.Join("/dev/pts", strconv.Itoa(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	t, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err == nil {
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, t)
	}
	return m, s, nil
}

// reapGroup ends what is left of the kernel's process group (it leads
// its session): UML's helper processes, which share its open files and
// so its locks on the disk images, die with the kernel but not at once.
// It waits up to 5 seconds, so that once the relay has exited nothing of
// the guest holds an image.
func reapGroup(pgid int) {
	syscall.Kill(-pgid, syscall.SIGKILL)
	for range 100 {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
