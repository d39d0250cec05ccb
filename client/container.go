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
	"sync"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/execstream"
)

// ExecIO connects a remote command to local streams; nil Stdin sends EOF at
// once, nil Stdout or Stderr discard.
type ExecIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// ContainerExec runs req in container id and returns the command's exit
// code. It upgrades an HTTP/1.1 connection to the exec stream.
func (c *Client) ContainerExec(ctx context.Context, id int, req api.ContainerExecRequest, s ExecIO) (int, error) {
	conn, err := c.upgrade(ctx, "/api/v1/containers/"+strconv.Itoa(id)+"/exec", req)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return runStream(ctx, conn, s)
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
	out, errw := s.Stdout, s.Stderr
	if out == nil {
		out = io.Discard
	}
	if errw == nil {
		errw = io.Discard
	}
	for {
		typ, p, err := execstream.ReadFrame(conn)
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
