package container

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ctinit"
	"github.com/berthhq/berth/internal/guest"
)

// Exit codes of exec beyond the command's own, as docker and lxc-attach
// use them.
const (
	// ExitHelperFailed means berth could not enter the container.
	ExitHelperFailed = 125
	// ExitNotExecutable means the command exists but cannot run.
	ExitNotExecutable = 126
	// ExitNotFound means the command is not in the container.
	ExitNotFound = 127
)

// Exec runs req.Argv inside the running container through the exec
// helper (a re-exec'd berth that joins the container's cgroups and
// namespaces) and returns the command's exit code.
func (d *Driver) Exec(ctx context.Context, cfg api.Guest, req guest.ExecRequest) (int, error) {
	if len(req.Argv) == 0 {
		return 0, &guest.ValidationError{Fields: map[string]string{"argv": "give a command to run"}}
	}
	rs, ok := d.running(cfg.ID)
	if !ok {
		return 0, fmt.Errorf("container %d is not running: start it first", cfg.ID)
	}
	if st, _ := d.Status(ctx, cfg); st.Status == api.GuestPaused {
		return 0, fmt.Errorf("container %d is suspended: resume it first", cfg.ID)
	}
	grp, err := d.cg.Open(cgroupName(cfg.ID))
	if err != nil {
		return 0, err
	}
	args := []string{"berth", ExecMode, "--pid", strconv.Itoa(rs.PID), "--start", strconv.FormatUint(rs.StartTime, 10)}
	if rs.Privileged {
		args = append(args, "--privileged")
	}
	if rs.KSM != "" {
		args = append(args, "--ksm", rs.KSM)
	}
	for _, dir := range grp.Dirs() {
		args = append(args, "--cgroup", dir)
	}
	if req.TTY {
		args = append(args, "--env", "TERM=xterm")
	}
	for _, e := range req.Env {
		if !strings.Contains(e, "=") {
			return 0, &guest.ValidationError{Fields: map[string]string{"env": fmt.Sprintf("%q is not VAR=VALUE", e)}}
		}
		args = append(args, "--env", e)
	}
	args = append(args, "--")
	args = append(args, req.Argv...)
	cmd := &exec.Cmd{Path: d.o.Self, Args: args, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GOMAXPROCS=1"}, Dir: "/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var copyDone chan struct{}
	if req.TTY {
		master, slave, err := openPTY()
		if err != nil {
			return 0, err
		}
		defer master.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
		if err := cmd.Start(); err != nil {
			slave.Close()
			return ExitHelperFailed, fmt.Errorf("start exec helper: %w", err)
		}
		slave.Close()
		copyDone = make(chan struct{})
		if req.Stdin != nil {
			go func() { _, _ = io.Copy(master, req.Stdin) }()
		}
		go func() {
			defer close(copyDone)
			out := req.Stdout
			if out == nil {
				out = io.Discard
			}
			_, _ = io.Copy(out, master) // ends with EIO when the last slave closes
		}()
	} else {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = req.Stdin, req.Stdout, req.Stderr
		if err := cmd.Start(); err != nil {
			return ExitHelperFailed, fmt.Errorf("start exec helper: %w", err)
		}
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waitErr:
	case <-ctx.Done():
		// The helper's child has PR_SET_PDEATHSIG: killing the helper
		// kills the command.
		_ = cmd.Process.Kill()
		werr = <-waitErr
	}
	if copyDone != nil {
		<-copyDone
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if werr != nil {
		return ExitHelperFailed, fmt.Errorf("exec helper: %w", werr)
	}
	return 0, nil
}

// Console opens a login shell on a new pseudo-terminal inside the
// container; closing the stream ends the shell. berth keeps no console
// process per container (see the package docs): init's own console output
// is in DATA/containers/ID/console.log.
func (d *Driver) Console(ctx context.Context, cfg api.Guest) (io.ReadWriteCloser, error) {
	if _, ok := d.running(cfg.ID); !ok {
		return nil, fmt.Errorf("container %d is not running: start it first", cfg.ID)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		code, err := d.Exec(cctx, cfg, guest.ExecRequest{Argv: []string{"/bin/sh", "-l"}, Stdin: inR, Stdout: outW, TTY: true})
		if err != nil {
			fmt.Fprintf(outW, "\r\nberth: console: %v\r\n", err)
		} else {
			fmt.Fprintf(outW, "\r\n[console shell exited with status %d]\r\n", code)
		}
		outW.Close()
	}()
	return &consoleStream{r: outR, w: inW, close: func() { cancel(); inW.Close(); outR.Close() }}, nil
}

type consoleStream struct {
	r     io.Reader
	w     io.WriteCloser
	close func()
}

func (c *consoleStream) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *consoleStream) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *consoleStream) Close() error                { c.close(); return nil }

// ConsoleLog returns the last max bytes of init's console output.
func (d *Driver) ConsoleLog(id, max int) ([]byte, error) {
	f, err := os.Open(d.consoleLog(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if off := st.Size() - int64(max); off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, int64(max)))
}

// openPTY opens a new pseudo-terminal pair on the host.
func openPTY() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	var n uint32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		unix.Close(m)
		return nil, nil, fmt.Errorf("pty number: %w", e)
	}
	s, err := unix.Open("/dev/pts/"+strconv.Itoa(int(n)), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("open pty slave: %w", err)
	}
	return os.NewFile(uintptr(m), "ptmx"), os.NewFile(uintptr(s), "pts"), nil
}

// ExecHelper is the ExecMode hidden command: it joins the container's
// cgroups, then ctinit.Join enters the namespaces and runs the command.
// It returns the process exit code.
func ExecHelper(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(ExecMode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	pid := fs.Int("pid", 0, "container init PID")
	start := fs.Uint64("start", 0, "init start time")
	priv := fs.Bool("privileged", false, "no user namespace")
	cwd := fs.String("cwd", "/", "working directory")
	ksmChoice := fs.String("ksm", "", "the container's KSM choice (on, off, default)")
	var cgroups, env multiFlag
	fs.Var(&cgroups, "cgroup", "cgroup directory to join (repeatable)")
	fs.Var(&env, "env", "VAR=VALUE (repeatable)")
	if err := fs.Parse(args); err != nil {
		return ExitHelperFailed
	}
	for _, dir := range cgroups {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			fmt.Fprintf(stderr, "berth exec: join cgroup %s: %v\n", dir, err)
			return ExitHelperFailed
		}
	}
	code, err := ctinit.Join(ctinit.JoinSpec{PID: *pid, StartTime: *start, Privileged: *priv, Argv: fs.Args(), Env: env, Cwd: *cwd, KSM: *ksmChoice})
	if err != nil {
		fmt.Fprintf(stderr, "berth exec: %v\n", err)
		return ExitHelperFailed
	}
	return code
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
