package api

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/execstream"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/task"
)

// containerOps is what the container driver offers beyond guest.Driver.
type containerOps interface {
	guest.Driver
	Suspend(ctx context.Context, cfg wire.Guest, log guest.Logger) error
	Resume(ctx context.Context, cfg wire.Guest, log guest.Logger) error
	Reboot(ctx context.Context, cfg wire.Guest, timeout time.Duration, log guest.Logger) error
	Snapshots(id int) ([]wire.ContainerSnapshot, error)
	Snapshot(ctx context.Context, cfg wire.Guest, name, description string, log guest.Logger) error
	Rollback(ctx context.Context, cfg wire.Guest, name string, log guest.Logger) error
	DeleteSnapshot(ctx context.Context, cfg wire.Guest, name string, log guest.Logger) error
	Clone(ctx context.Context, src, dst wire.Guest, log guest.Logger) error
	ConsoleLog(id, max int) ([]byte, error)
}

func (sv *Services) containerRoutes() []Route {
	id := Param{Name: "id", In: "path", Type: "integer"}
	snap := Param{Name: "name", In: "path", Type: "string", Description: "snapshot name"}
	return []Route{
		{Method: "GET", Path: "/api/v1/containers/{id}/status", Summary: "A container's runtime state: status, init PID, uptime, memory, processes.", Role: wire.RoleAuditor, Params: []Param{id}, Resp: wire.ContainerStatus{},
			Handle: sv.containerStatus},
		{Method: "POST", Path: "/api/v1/containers/{id}/status/{action}", Summary: "Suspend (freeze), resume (thaw) or reboot a container, as a task.", Role: wire.RoleOperator, Async: true,
			Params: []Param{id, {Name: "action", In: "path", Type: "string", Description: "suspend, resume or reboot"},
				{Name: "timeout", In: "query", Type: "integer", Description: "reboot: seconds of clean shutdown before a hard stop"}},
			Handle: sv.containerAction},
		{Method: "POST", Path: "/api/v1/containers/{id}/exec", Summary: "Run a command in a running container: the connection upgrades (Upgrade: berth-exec/1) to framed stdin/stdout/stderr and ends with the exit code. Without Upgrade, the answer is the output frames and the exit code only (" + wire.ExecFramesType + "; stdin is /dev/null).",
			Role: wire.RoleOperator, Params: []Param{id}, Body: wire.ContainerExecRequest{}, ContentType: "application/octet-stream",
			Stream: sv.containerExec},
		{Method: "POST", Path: "/api/v1/containers/{id}/console", Summary: "Attach to a login shell on a new pseudo-terminal in the container (same upgrade and framing as exec).",
			Role: wire.RoleOperator, Params: []Param{id}, ContentType: "application/octet-stream",
			Stream: sv.containerConsole},
		{Method: "GET", Path: "/api/v1/containers/{id}/console-log", Summary: "The container init's recent console output (last 64 KiB).", Role: wire.RoleAuditor, Params: []Param{id}, Resp: wire.ContainerConsoleLog{},
			Handle: func(r *Request) (any, error) {
				g, ops, err := sv.container(r)
				if err != nil {
					return nil, err
				}
				b, err := ops.ConsoleLog(g.ID, 64<<10)
				return wire.ContainerConsoleLog{Log: string(b)}, err
			}},
		{Method: "GET", Path: "/api/v1/containers/{id}/snapshots", Summary: "A container's snapshots, oldest first.", Role: wire.RoleAuditor, Params: []Param{id}, Resp: []wire.ContainerSnapshot{},
			Handle: func(r *Request) (any, error) {
				g, ops, err := sv.container(r)
				if err != nil {
					return nil, err
				}
				return ops.Snapshots(g.ID)
			}},
		{Method: "POST", Path: "/api/v1/containers/{id}/snapshots", Summary: "Snapshot a container's writable layer (a running one is frozen during the copy), as a task.", Role: wire.RoleOperator, Params: []Param{id}, Body: wire.ContainerSnapshotRequest{}, Async: true,
			Handle: func(r *Request) (any, error) {
				g, ops, err := sv.container(r)
				if err != nil {
					return nil, err
				}
				var in wire.ContainerSnapshotRequest
				if err := r.Decode(&in); err != nil {
					return nil, err
				}
				return sv.start(r, "vzsnapshot", strconv.Itoa(g.ID), func(ctx context.Context, l *task.Log) error {
					return ops.Snapshot(ctx, g, in.Name, in.Description, l)
				})
			}},
		{Method: "POST", Path: "/api/v1/containers/{id}/snapshots/{name}/rollback", Summary: "Roll a stopped container back to a snapshot, as a task.", Role: wire.RoleOperator, Params: []Param{id, snap}, Async: true,
			Handle: func(r *Request) (any, error) {
				g, ops, err := sv.container(r)
				if err != nil {
					return nil, err
				}
				name := r.PathValue("name")
				return sv.start(r, "vzrollback", strconv.Itoa(g.ID), func(ctx context.Context, l *task.Log) error {
					return ops.Rollback(ctx, g, name, l)
				})
			}},
		{Method: "DELETE", Path: "/api/v1/containers/{id}/snapshots/{name}", Summary: "Delete a snapshot, as a task.", Role: wire.RoleOperator, Params: []Param{id, snap}, Async: true,
			Handle: func(r *Request) (any, error) {
				g, ops, err := sv.container(r)
				if err != nil {
					return nil, err
				}
				name := r.PathValue("name")
				return sv.start(r, "vzdelsnapshot", strconv.Itoa(g.ID), func(ctx context.Context, l *task.Log) error {
					return ops.DeleteSnapshot(ctx, g, name, l)
				})
			}},
		{Method: "POST", Path: "/api/v1/containers/{id}/clone", Summary: "Clone a container to a new ID: the new guest gets a copy of the writable layer only (the image stays shared), as a task.", Role: wire.RoleOperator, Params: []Param{id}, Body: wire.ContainerCloneRequest{}, Async: true,
			Handle: sv.containerClone},
	}
}

// container returns the guest of the request and the container driver.
func (sv *Services) container(r *Request) (wire.Guest, containerOps, error) {
	g, err := sv.guest(r)
	if err != nil {
		return g, nil, err
	}
	if g.Kind != wire.GuestContainer {
		return g, nil, Invalid(fmt.Sprintf("guest %d is a %s, not a container", g.ID, g.Kind), nil)
	}
	d, err := sv.Guests.Driver(g.Kind)
	if err != nil {
		return g, nil, err
	}
	ops, ok := d.(containerOps)
	if !ok {
		return g, nil, &wire.Error{Status: http.StatusNotImplemented, Code: "not_supported", Message: "the container driver of this node does not support this operation"}
	}
	return g, ops, nil
}

func (sv *Services) containerStatus(r *Request) (any, error) {
	g, ops, err := sv.container(r)
	if err != nil {
		return nil, err
	}
	st, err := ops.Status(r.Context(), g)
	if err != nil {
		return nil, err
	}
	out := wire.ContainerStatus{ID: g.ID, Status: st.Status, PID: st.PID, Cgroup: st.Details["cgroup"]}
	out.Uptime, _ = strconv.ParseInt(st.Details["uptime"], 10, 64)
	out.Memory, _ = strconv.ParseInt(st.Details["memory"], 10, 64)
	out.Processes, _ = strconv.Atoi(st.Details["processes"])
	return out, nil
}

func (sv *Services) containerAction(r *Request) (any, error) {
	g, ops, err := sv.container(r)
	if err != nil {
		return nil, err
	}
	timeout, err := r.QueryInt("timeout", 0)
	if err != nil {
		return nil, err
	}
	to := guest.DefaultShutdownTimeout
	if g.Startup.Down > 0 {
		to = time.Duration(g.Startup.Down) * time.Second
	}
	if timeout > 0 {
		to = time.Duration(timeout) * time.Second
	}
	var fn task.Func
	switch a := r.PathValue("action"); a {
	case "suspend":
		fn = func(ctx context.Context, l *task.Log) error { return ops.Suspend(ctx, g, l) }
	case "resume":
		fn = func(ctx context.Context, l *task.Log) error { return ops.Resume(ctx, g, l) }
	case "reboot":
		fn = func(ctx context.Context, l *task.Log) error { return ops.Reboot(ctx, g, to, l) }
	default:
		return nil, Invalid("unknown action", map[string]string{"action": fmt.Sprintf("%q: use suspend, resume or reboot (start, shutdown and stop are under /guests/{id}/status)", a)})
	}
	return sv.start(r, "vz"+r.PathValue("action"), strconv.Itoa(g.ID), fn)
}

func (sv *Services) containerClone(r *Request) (any, error) {
	src, ops, err := sv.container(r)
	if err != nil {
		return nil, err
	}
	var in wire.ContainerCloneRequest
	if err := r.Decode(&in); err != nil {
		return nil, err
	}
	dst := wire.Guest{ID: in.NewID, Kind: src.Kind, Name: in.Name, Config: map[string]string{}}
	for k, v := range src.Config {
		dst.Config[k] = v
	}
	if in.Name != "" {
		dst.Config["hostname"] = in.Name
	}
	// Stable MACs are derived per guest: drop pinned source MACs.
	for k, v := range dst.Config {
		if strings.HasPrefix(k, "net") && strings.Contains(v, "hwaddr=") {
			var parts []string
			for _, p := range strings.Split(v, ",") {
				if !strings.HasPrefix(p, "hwaddr=") {
					parts = append(parts, p)
				}
			}
			dst.Config[k] = strings.Join(parts, ",")
		}
	}
	created, err := sv.Guests.Create(r.Context(), dst)
	if err != nil {
		return nil, err
	}
	return sv.start(r, "vzclone", strconv.Itoa(src.ID), func(ctx context.Context, l *task.Log) error {
		if err := ops.Clone(ctx, src, created, l); err != nil {
			l.Printf("clone failed, removing the configuration of guest %d", created.ID)
			if rmErr := sv.Guests.Remove(context.WithoutCancel(ctx), created.ID, ""); rmErr != nil {
				l.Printf("cleanup: %v", rmErr)
			}
			return err
		}
		return nil
	})
}

// upgrade checks the Upgrade header, answers 101 and hands over the raw
// connection with any data the client already sent buffered.
func upgrade(w http.ResponseWriter, r *Request) (io.ReadWriteCloser, *bufio.ReadWriter, error) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), wire.ExecUpgrade) {
		return nil, nil, Invalid("this endpoint needs 'Connection: Upgrade' and 'Upgrade: "+wire.ExecUpgrade+"' (use berth ct exec or the Go client)", nil)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("upgrade: %w (HTTP/2 connections cannot be upgraded: use HTTP/1.1)", err)
	}
	_ = conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + wire.ExecUpgrade + "\r\n\r\n"); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if err := brw.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, brw, nil
}

func (sv *Services) containerExec(w http.ResponseWriter, r *Request) error {
	g, ops, err := sv.container(r)
	if err != nil {
		return err
	}
	var in wire.ContainerExecRequest
	if err := r.Decode(&in); err != nil {
		return err
	}
	if len(in.Argv) == 0 {
		return Invalid("no command", map[string]string{"argv": "give the command to run"})
	}
	notRunning := &wire.Error{Status: http.StatusConflict, Code: "not_running", Message: fmt.Sprintf("container %d is not running: start it first", g.ID)}
	// The driver checks that the container runs before it touches the
	// command's stdio, so the stream is upgraded only then (lazily) and
	// the common case costs no separate status check. If the driver fails
	// before that, a container that is not running still gets a plain 409.
	var s *stream
	if r.Header.Get("Upgrade") == "" {
		// Output only, in the response: no upgrade, and the connection
		// is not used up.
		s = newStream(func() (io.ReadWriteCloser, *bufio.Reader, error) {
			w.Header().Set("Content-Type", wire.ExecFramesType)
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
			sv.Log.Info("container exec", "guest", g.ID, "user", r.Identity.User, "argv", strings.Join(in.Argv, " "))
			return &frameResponse{w: w, rc: http.NewResponseController(w)}, nil, nil
		})
		s.noInput = true
		// A client that hangs up cancels the command.
		stop := context.AfterFunc(r.Context(), s.cancel)
		defer stop()
	} else {
		s = newStream(func() (io.ReadWriteCloser, *bufio.Reader, error) {
			conn, brw, err := upgrade(w, r)
			if err != nil {
				return nil, nil, err
			}
			sv.Log.Info("container exec", "guest", g.ID, "user", r.Identity.User, "argv", strings.Join(in.Argv, " "))
			return conn, brw.Reader, nil
		})
	}
	code, err := s.run(func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
		return ops.Exec(ctx, g, guest.ExecRequest{Argv: in.Argv, Stdin: stdin, Stdout: stdout, Stderr: stderr, TTY: in.TTY, Env: in.Env})
	})
	if err != nil && !s.connected() {
		if st, serr := ops.Status(r.Context(), g); serr != nil || st.Status != wire.GuestRunning {
			if s.abandon() {
				return notRunning
			}
		}
	}
	return s.finish(code, err)
}

func (sv *Services) containerConsole(w http.ResponseWriter, r *Request) error {
	g, ops, err := sv.container(r)
	if err != nil {
		return err
	}
	rw, err := ops.Console(r.Context(), g)
	if err != nil {
		return err
	}
	defer rw.Close()
	s := newStream(func() (io.ReadWriteCloser, *bufio.Reader, error) {
		conn, brw, err := upgrade(w, r)
		if err != nil {
			return nil, nil, err
		}
		return conn, brw.Reader, nil
	})
	if err := s.connect(); err != nil {
		return err
	}
	code, err := s.run(func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
		go func() { _, _ = io.Copy(rw, stdin); rw.Close() }()
		_, err := io.Copy(stdout, rw)
		return 0, err
	})
	return s.finish(code, err)
}

// stream is the server side of an exec or console stream: stdin frames
// from the client feed the command's input, its output goes back as
// frames, and an exit or error frame ends it. The connection is upgraded
// (by open) when the command first reads its input or writes output, or
// at the end: a command that fails before that can still be answered
// with a plain HTTP error.
type stream struct {
	open func() (io.ReadWriteCloser, *bufio.Reader, error)
	// upMu serialises connect; done says open was called.
	upMu sync.Mutex
	done bool
	conn io.ReadWriteCloser // set once open succeeded
	err  error              // open's error
	mu   sync.Mutex         // whole frames on conn
	inR  *io.PipeReader
	inW  *io.PipeWriter
	// noInput: the command gets no stdin from the client (/dev/null).
	noInput bool
	ctx     context.Context
	cancel  context.CancelFunc
}

func newStream(open func() (io.ReadWriteCloser, *bufio.Reader, error)) *stream {
	s := &stream{open: open}
	s.inR, s.inW = io.Pipe()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// connect upgrades the connection once and starts reading the client's
// frames: stdin data, an empty frame for EOF. A client that hangs up
// cancels the command.
func (s *stream) connect() error {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if !s.done {
		s.done = true
		conn, br, err := s.open()
		if err != nil {
			s.err = err
			s.inW.CloseWithError(err)
			s.cancel()
			return err
		}
		s.conn = conn
		if br == nil {
			// No input (an answer without upgrade).
			s.inW.Close()
			return nil
		}
		go func() {
			defer s.inW.Close()
			for {
				typ, p, err := execstream.ReadFrame(br)
				if err != nil {
					s.cancel()
					return
				}
				if typ != wire.ExecFrameStdin {
					continue
				}
				if len(p) == 0 {
					s.inW.Close()
					continue
				}
				if _, err := s.inW.Write(p); err != nil {
					// The command closed its stdin: drop further input.
					continue
				}
			}
		}()
	}
	return s.err
}

// errAbandoned is what the command's stdio returns once the handler
// answered without upgrading.
var errAbandoned = errors.New("exec stream: the request was answered without an upgrade")

// abandon makes later stdio calls fail instead of upgrading, so that the
// handler can answer with a plain HTTP error. It returns false if the
// connection was upgraded meanwhile.
func (s *stream) abandon() bool {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.done {
		return s.conn == nil
	}
	s.done, s.err = true, errAbandoned
	s.inW.CloseWithError(errAbandoned)
	s.cancel()
	return true
}

// connected reports whether the connection was upgraded.
func (s *stream) connected() bool {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	return s.conn != nil
}

// run runs fn with the stream's input and output; without input (noInput)
// stdin is nil, which gives the command /dev/null.
func (s *stream) run(fn func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) (int, error)) (int, error) {
	defer s.inR.Close()
	var in io.Reader = streamInput{s}
	if s.noInput {
		in = nil
	}
	return fn(s.ctx, in, &streamOutput{s: s, typ: wire.ExecFrameStdout}, &streamOutput{s: s, typ: wire.ExecFrameStderr})
}

// finish sends the exit frame for code, or the error frame for err,
// upgrading first if nothing did yet, and closes the connection. It
// returns an error only if the upgrade failed; errors after it go to the
// client as an error frame.
func (s *stream) finish(code int, err error) error {
	defer s.cancel()
	if cerr := s.connect(); cerr != nil {
		return cerr
	}
	defer s.conn.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if fr, ok := s.conn.(*frameResponse); ok {
		fr.last = true // the handler's end sends it, with the end of the body
	}
	if err != nil {
		_ = execstream.WriteFrame(s.conn, wire.ExecFrameError, []byte(err.Error()))
		return nil
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
	_ = execstream.WriteFrame(s.conn, wire.ExecFrameExit, b[:])
	return nil
}

// frameResponse is the stream of an exec answered without upgrade: the
// frames go into the response body, each flushed to the client as it is
// written but the last, which goes out with the body's end; there is no
// input.
type frameResponse struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	last bool
}

func (f *frameResponse) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil && !f.last {
		err = f.rc.Flush()
	}
	return n, err
}

func (f *frameResponse) Read([]byte) (int, error) { return 0, io.EOF }
func (f *frameResponse) Close() error             { return nil }

// streamInput is the command's stdin.
type streamInput struct{ s *stream }

func (i streamInput) Read(p []byte) (int, error) {
	if err := i.s.connect(); err != nil {
		return 0, err
	}
	return i.s.inR.Read(p)
}

// streamOutput sends what the command writes as frames of one type.
type streamOutput struct {
	s   *stream
	typ byte
}

func (o *streamOutput) Write(p []byte) (int, error) {
	if err := o.s.connect(); err != nil {
		return 0, err
	}
	w := execstream.Writer{Mu: &o.s.mu, W: o.s.conn, Typ: o.typ}
	return w.Write(p)
}
