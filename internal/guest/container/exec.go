package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
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

// Exec runs req.Argv inside the running container and returns the
// command's exit code: through the container's exec helper, which spawns
// it (ctinit.Helper), or, without one (a container adopted from an
// earlier daemon, KSM on or off, a helper gone), forked by the daemon
// straight into the container's cgroups and namespaces (ctinit.Join).
// A nil req.Stdin is /dev/null.
func (d *Driver) Exec(ctx context.Context, cfg api.Guest, req guest.ExecRequest) (int, error) {
	ph := d.phases("exec", cfg.ID)
	defer ph.done()
	if len(req.Argv) == 0 {
		return 0, &guest.ValidationError{Fields: map[string]string{"argv": "give a command to run"}}
	}
	for _, e := range req.Env {
		if !strings.Contains(e, "=") {
			return 0, &guest.ValidationError{Fields: map[string]string{"env": fmt.Sprintf("%q is not VAR=VALUE", e)}}
		}
	}
	rs, ok := d.running(cfg.ID)
	if !ok {
		return 0, fmt.Errorf("container %d is not running: start it first", cfg.ID)
	}
	grp, err := d.cg.Open(cgroupName(cfg.ID))
	if err != nil {
		return 0, err
	}
	if frozen, _ := grp.Frozen(); frozen {
		return 0, fmt.Errorf("container %d is suspended: resume it first", cfg.ID)
	}
	spec := ctinit.JoinSpec{PID: rs.PID, StartTime: rs.StartTime, Privileged: rs.Privileged, Argv: req.Argv,
		Env: req.Env, Cgroups: grp.Dirs(), TTY: req.TTY, KSM: rs.KSM}
	if req.TTY {
		spec.Env = append([]string{"TERM=xterm"}, spec.Env...)
	}
	var st stdio
	defer st.closeAll()
	if req.TTY {
		master, slave, err := openPTY()
		if err != nil {
			return 0, err
		}
		st.closeAfterStart = append(st.closeAfterStart, slave)
		fd := int(slave.Fd())
		spec.Stdio = [3]int{fd, fd, fd}
		if req.Stdin != nil {
			go func() { _, _ = io.Copy(master, req.Stdin) }()
		}
		st.copy(req.Stdout, master) // ends with EIO when the last slave closes
	} else {
		if spec.Stdio[0], err = st.input(req.Stdin); err == nil {
			if spec.Stdio[1], err = st.output(req.Stdout); err == nil {
				spec.Stdio[2] = spec.Stdio[1]
				if !sameWriter(req.Stdout, req.Stderr) {
					spec.Stdio[2], err = st.output(req.Stderr)
				}
			}
		}
		if err != nil {
			return ExitHelperFailed, err
		}
	}
	ph.mark("spawn")
	var stages []ctinit.Stage
	if ph.on() {
		spec.Stages = &stages
	}
	code, err := d.join(ctx, cfg.ID, rs, spec)
	ph.mark("wait")
	ph.detail("wait", stages)
	st.closeStarted()
	st.wait()
	if err != nil {
		return ExitHelperFailed, fmt.Errorf("exec in container %d: %w", cfg.ID, err)
	}
	return code, nil
}

// join runs spec through container id's exec helper, or ctinit.Join
// without one (a container started by an earlier daemon, or with KSM on
// or off) or once the helper is found gone.
func (d *Driver) join(ctx context.Context, id int, rs runtimeState, spec ctinit.JoinSpec) (int, error) {
	if h := d.helperOf(id, rs); h != nil {
		code, err := h.Exec(ctx, spec)
		if !errors.Is(err, ctinit.ErrHelperGone) {
			return code, err
		}
		d.o.Log.Warn("container exec helper gone; joining the container instead", "guest", id, "err", err)
		d.dropHelper(id, h)
		if spec.Stages != nil {
			*spec.Stages = nil
		}
	}
	return ctinit.Join(ctx, spec)
}

// sameWriter reports whether a and b are the same writer (as os/exec
// does, one pipe then serves both, so writes keep their order and the
// writer is not used concurrently).
func sameWriter(a, b io.Writer) (same bool) {
	defer func() { _ = recover() }() // uncomparable dynamic types
	return a == b
}

// stdio connects an exec'd command's standard descriptors to readers and
// writers through pipes, as os/exec does.
type stdio struct {
	closeAfterStart []*os.File // the command's ends, duplicated into it
	closeAfterWait  []*os.File
	copies          sync.WaitGroup
}

// closeStarted closes the daemon's copies of the command's ends, so that
// the output copies see end of file once the command's are closed too.
func (s *stdio) closeStarted() {
	for _, f := range s.closeAfterStart {
		f.Close()
	}
	s.closeAfterStart = nil
}

// wait waits for the output copies to reach end of file.
func (s *stdio) wait() {
	s.copies.Wait()
	for _, f := range s.closeAfterWait {
		f.Close()
	}
	s.closeAfterWait = nil
}

func (s *stdio) closeAll() {
	s.closeStarted()
	for _, f := range s.closeAfterWait {
		f.Close()
	}
}

// direct returns the descriptor of v if it is an *os.File, or of
// /dev/null opened with flag if v is nil; ok is false for other values,
// which need a pipe.
func (s *stdio) direct(v any, flag int) (fd int, ok bool, err error) {
	if f, isFile := v.(*os.File); isFile {
		return int(f.Fd()), true, nil
	}
	if v != nil {
		return -1, false, nil
	}
	f, err := os.OpenFile(os.DevNull, flag, 0)
	if err != nil {
		return -1, true, err
	}
	s.closeAfterStart = append(s.closeAfterStart, f)
	return int(f.Fd()), true, nil
}

// input returns the command's stdin descriptor for r (nil: /dev/null).
func (s *stdio) input(r io.Reader) (int, error) {
	if fd, ok, err := s.direct(r, os.O_RDONLY); ok {
		return fd, err
	}
	pr, pw, err := commandPipe(false)
	if err != nil {
		return -1, fmt.Errorf("exec: stdin pipe: %w", err)
	}
	s.closeAfterStart = append(s.closeAfterStart, pr)
	s.closeAfterWait = append(s.closeAfterWait, pw)
	go func() {
		_, _ = io.Copy(pw, r)
		pw.Close()
	}()
	return int(pr.Fd()), nil
}

// commandPipe returns a pipe between the daemon and a command: the
// command's end (the read end for its input, the write end for its output)
// stays blocking, as programs expect of their standard descriptors, and
// is not put on the runtime's poller; the daemon's end is non-blocking, on
// the poller. os.Pipe makes both ends non-blocking and polled, and Fd on
// the command's end then made it blocking again: twice the system calls
// (fcntl, epoll_ctl) for every exec.
func commandPipe(output bool) (pr, pw *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	daemonEnd := p[1]
	if output {
		daemonEnd = p[0]
	}
	// A new pipe end has no other status flag to keep.
	if _, err := unix.FcntlInt(uintptr(daemonEnd), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, err
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}

// output returns the command's descriptor for w (nil: /dev/null).
func (s *stdio) output(w io.Writer) (int, error) {
	if fd, ok, err := s.direct(w, os.O_WRONLY); ok {
		return fd, err
	}
	pr, pw, err := commandPipe(true)
	if err != nil {
		return -1, fmt.Errorf("exec: output pipe: %w", err)
	}
	s.closeAfterStart = append(s.closeAfterStart, pw)
	s.copy(w, pr)
	return int(pw.Fd()), nil
}

// copy copies r to w (or discards it) until r ends, then closes r.
func (s *stdio) copy(w io.Writer, r *os.File) {
	if w == nil {
		w = io.Discard
	}
	s.copies.Add(1)
	go func() {
		defer s.copies.Done()
		_, _ = io.Copy(w, r)
		r.Close()
	}()
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
