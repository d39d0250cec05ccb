package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/execstream"
)

// ExecIO connects a remote command to local streams; with nil Stdin the
// command's stdin is /dev/null (and no stream upgrade is needed), nil
// Stdout or Stderr discard.
type ExecIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// ContainerExec runs req in container id and returns the command's exit
// code. With input (s.Stdin) or a terminal it upgrades an HTTP/1.1
// connection to the exec stream; without, the daemon answers with the
// output frames (api.ExecFramesType), the command's stdin is /dev/null
// and the connection serves the next request (a daemon that only knows
// the upgrade is asked again with it).
func (c *Client) ContainerExec(ctx context.Context, id int, req api.ContainerExecRequest, s ExecIO) (int, error) {
	path := "/api/v1/containers/" + strconv.Itoa(id) + "/exec"
	if s.Stdin == nil && !req.TTY {
		code, err := c.execOutput(ctx, path, req, s)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, "Upgrade") {
			return code, err
		}
	}
	conn, err := c.upgrade(ctx, path, req)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return runStream(ctx, conn, s)
}

// execOutput runs req without input: the answer's body is the output
// frames, read to its end (which returns a unix socket connection to the
// pool).
func (c *Client) execOutput(ctx context.Context, path string, req api.ContainerExecRequest, s ExecIO) (int, error) {
	resp, err := c.send(ctx, "POST", path, req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return 0, err
	}
	if ct := resp.Header.Get("Content-Type"); ct != api.ExecFramesType {
		return 0, fmt.Errorf("exec: the daemon answered %q, not exec frames", ct)
	}
	code, err := readFrames(ctx, resp.Body, s)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return code, err
}

// ContainerConsole attaches s to a login shell on a new pseudo-terminal in
// container id until the shell exits or s.Stdin ends.
func (c *Client) ContainerConsole(ctx context.Context, id int, s ExecIO) error {
	conn, err := c.upgrade(ctx, "/api/v1/containers/"+strconv.Itoa(id)+"/console", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = runStream(ctx, conn, s)
	return err
}

// upgrade POSTs body to path asking for the exec stream and returns the
// upgraded connection.
func (c *Client) upgrade(ctx context.Context, path string, body any) (io.ReadWriteCloser, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.upgradeConn(req, api.ExecUpgrade, "exec")
}

// runStream pumps s through the framed connection until the exit frame.
func runStream(ctx context.Context, conn io.ReadWriteCloser, s ExecIO) (int, error) {
	var mu sync.Mutex
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		if s.Stdin != nil {
			w := &execstream.Writer{Mu: &mu, W: conn, Typ: api.ExecFrameStdin}
			_, _ = io.Copy(w, s.Stdin)
		}
		mu.Lock()
		_ = execstream.WriteFrame(conn, api.ExecFrameStdin, nil)
		mu.Unlock()
	}()
	return readFrames(ctx, conn, s)
}

// readFrames passes output frames from r to s until the exit or error
// frame.
func readFrames(ctx context.Context, r io.Reader, s ExecIO) (int, error) {
	out, errw := s.Stdout, s.Stderr
	if out == nil {
		out = io.Discard
	}
	if errw == nil {
		errw = io.Discard
	}
	for {
		typ, p, err := execstream.ReadFrame(r)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("exec stream ended early: %w", err)
		}
		switch typ {
		case api.ExecFrameStdout:
			_, _ = out.Write(p)
		case api.ExecFrameStderr:
			_, _ = errw.Write(p)
		case api.ExecFrameExit:
			if len(p) != 4 {
				return 0, errors.New("exec stream: malformed exit frame")
			}
			return int(int32(binary.BigEndian.Uint32(p))), nil
		case api.ExecFrameError:
			return 0, &api.Error{Status: http.StatusConflict, Code: "exec_failed", Message: string(p)}
		}
	}
}
