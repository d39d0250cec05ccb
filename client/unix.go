package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// maxIdleUnix is how many idle connections a unix-socket client keeps.
const maxIdleUnix = 16

// unixTransport is the http.RoundTripper of NewUnix: HTTP/1.1 over the
// daemon's unix socket, each request written and its response read in the
// calling goroutine, on connections kept alive in a small pool.
//
// net/http's Transport reads and writes every connection in goroutines of
// its own, so each request costs several goroutine hand-offs, and a
// connection finished with goes back to the pool only once its reader
// goroutine ran: a request sent right after another often dials afresh.
// On a loaded or virtualised host each hand-off can take a good part of a
// millisecond, more than the rest of a local API call.
type unixTransport struct {
	socket string

	mu   sync.Mutex
	idle []*unixConn // most recently used last
}

type unixConn struct {
	net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func newUnixConn(c net.Conn) *unixConn {
	return &unixConn{Conn: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}
}

var _ http.RoundTripper = (*unixTransport)(nil)

// RoundTrip implements http.RoundTripper. A request that fails on a
// reused connection before any of it reached the daemon (the daemon closed
// the idle connection) is retried once on a new one.
func (t *unixTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		uc, reused, err := t.conn(req.Context())
		if err != nil {
			closeReqBody(req)
			return nil, err
		}
		resp, sent, err := t.exchange(uc, req)
		if err == nil {
			if reused && resp.StatusCode == http.StatusSwitchingProtocols {
				// The stream keeps the connection. A client that reuses
				// connections likely sends another request after the
				// stream: dial its connection now, while the stream runs.
				go t.refill()
			}
			return resp, nil
		}
		if !reused || sent || attempt > 0 || req.Context().Err() != nil {
			closeReqBody(req)
			return nil, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

func closeReqBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// conn returns an idle connection or dials a new one.
func (t *unixTransport) conn(ctx context.Context) (*unixConn, bool, error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		uc := t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return uc, true, nil
	}
	t.mu.Unlock()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", t.socket)
	if err != nil {
		return nil, false, err
	}
	return newUnixConn(c), false, nil
}

// refill adds a new connection to an empty pool.
func (t *unixTransport) refill() {
	t.mu.Lock()
	empty := len(t.idle) == 0
	t.mu.Unlock()
	if !empty {
		return
	}
	c, err := net.Dial("unix", t.socket)
	if err != nil {
		return // the next request dials and reports the error
	}
	t.put(newUnixConn(c))
}

// put returns a connection whose exchange is complete to the pool.
func (t *unixTransport) put(uc *unixConn) {
	t.mu.Lock()
	if len(t.idle) < maxIdleUnix {
		t.idle = append(t.idle, uc)
		uc = nil
	}
	t.mu.Unlock()
	if uc != nil {
		uc.Close()
	}
}

// exchange writes req on uc and reads the response head. sent is false if
// the daemon cannot have seen the request: the write failed, or the
// connection ended before any byte of a response. On error uc is closed.
func (t *unixTransport) exchange(uc *unixConn, req *http.Request) (resp *http.Response, sent bool, err error) {
	ctx := req.Context()
	// Cancelling the request closes the connection, which ends any read
	// or write on it.
	stop := context.AfterFunc(ctx, func() { uc.Close() })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		uc.Close()
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return nil, sent, err
	}
	if err := req.Write(uc.bw); err != nil {
		return fail(err)
	}
	if err := uc.bw.Flush(); err != nil {
		sent = !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET)
		return fail(err)
	}
	sent = true
	resp, err = http.ReadResponse(uc.br, req)
	if err != nil {
		if errors.Is(err, io.EOF) && uc.br.Buffered() == 0 {
			sent = false // closed by the daemon before it read the request
		}
		return fail(err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The caller owns the connection now; it watches ctx itself.
		stop()
		resp.Body = &upgradedConn{uc: uc}
		return resp, true, nil
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		stop()
		if keep {
			t.put(uc)
		} else {
			uc.Close()
		}
		return resp, true, nil
	}
	resp.Body = &unixBody{rc: resp.Body, t: t, uc: uc, ctx: ctx, stop: stop, keep: keep}
	return resp, true, nil
}

// unixBody returns the connection to the pool once the body was read to
// its end, and closes it if the body is closed before.
type unixBody struct {
	rc   io.ReadCloser
	t    *unixTransport
	uc   *unixConn
	ctx  context.Context
	stop func() bool
	keep bool

	mu   sync.Mutex
	done bool
}

func (b *unixBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	if done {
		return 0, io.EOF
	}
	// Not under b.mu: Close may come from another goroutine meanwhile,
	// and closing the connection ends this read.
	n, err := b.rc.Read(p)
	if err == nil {
		return n, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.done = true
		b.stop()
		if err == io.EOF && b.keep {
			b.t.put(b.uc)
		} else {
			b.uc.Close()
		}
	}
	if cerr := b.ctx.Err(); cerr != nil && err != io.EOF {
		err = cerr
	}
	return n, err
}

func (b *unixBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.done = true
		b.stop()
		b.uc.Close()
	}
	return nil
}

// upgradedConn is the body of a 101 response: the raw connection, reading
// first what the response's reader buffered.
type upgradedConn struct{ uc *unixConn }

func (c *upgradedConn) Read(p []byte) (int, error)  { return c.uc.br.Read(p) }
func (c *upgradedConn) Write(p []byte) (int, error) { return c.uc.Conn.Write(p) }
func (c *upgradedConn) Close() error                { return c.uc.Close() }

// String names the transport in errors.
func (t *unixTransport) String() string { return fmt.Sprintf("unix socket %s", t.socket) }
