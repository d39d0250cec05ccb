// Package qmp is a small client for the QEMU Machine Protocol: it connects
// to a QEMU monitor socket, negotiates capabilities and runs commands one at
// a time. It knows nothing of guests or berth's configuration; the qemu
// driver builds on it.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Event is an asynchronous QMP event such as SHUTDOWN or POWERDOWN.
type Event struct {
	Name      string          `json:"event"`
	Data      json.RawMessage `json:"data,omitempty"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Error is a command's failure as QEMU reports it.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc) }

// Message is one decoded line of the protocol: a greeting, a command's
// return value, an error or an event. Exactly one of the fields is set.
type Message struct {
	Greeting *json.RawMessage `json:"QMP,omitempty"`
	Return   *json.RawMessage `json:"return,omitempty"`
	Error    *Error           `json:"error,omitempty"`
	Event    string           `json:"event,omitempty"`
	Data     json.RawMessage  `json:"data,omitempty"`
}

// ParseMessage decodes one protocol line and checks that it is exactly one
// of the known message kinds.
func ParseMessage(line []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(line, &m); err != nil {
		return Message{}, fmt.Errorf("qmp: bad message %q: %w", truncate(line), err)
	}
	n := 0
	for _, set := range []bool{m.Greeting != nil, m.Return != nil, m.Error != nil, m.Event != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return Message{}, fmt.Errorf("qmp: message %q is not exactly one of greeting, return, error or event", truncate(line))
	}
	return m, nil
}

func truncate(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "…"
	}
	return string(b)
}

// Client is a connection to one QMP socket. Its methods are safe for
// concurrent use; commands run one at a time.
type Client struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	events []Event
}

// maxLine bounds one protocol line; query results are far smaller.
const maxLine = 4 << 20

// Dial connects to the QMP unix socket at path, reads the greeting and
// leaves capability negotiation done, so commands can run at once.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect %s: %w", path, err)
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	stop := c.watch(ctx)
	defer stop()
	m, err := c.read()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: read greeting from %s: %w", path, err)
	}
	if m.Greeting == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: %s did not greet (is it a QMP socket?)", path)
	}
	if err := c.exec("qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// watch makes blocking I/O return when ctx ends.
func (c *Client) watch(ctx context.Context) func() {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	return func() { stop() }
}

func (c *Client) read() (Message, error) {
	var line []byte
	for {
		part, isPrefix, err := c.r.ReadLine()
		if err != nil {
			return Message{}, err
		}
		line = append(line, part...)
		if len(line) > maxLine {
			return Message{}, errors.New("qmp: message too long")
		}
		if !isPrefix {
			break
		}
	}
	return ParseMessage(line)
}

// Execute runs command with args (nil for none) and decodes its return
// value into result (nil to ignore it). A command QEMU rejects gives an
// *Error.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.watch(ctx)
	defer stop()
	return c.exec(command, args, result)
}

func (c *Client) exec(command string, args, result any) error {
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{command, args}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp: encode %s: %w", command, err)
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp: send %s: %w", command, err)
	}
	for {
		m, err := c.read()
		if err != nil {
			return fmt.Errorf("qmp: %s: %w", command, err)
		}
		switch {
		case m.Event != "":
			var ev Event
			if json.Unmarshal(mustJSON(m), &ev) == nil {
				c.events = append(c.events, ev)
			}
			continue
		case m.Error != nil:
			return fmt.Errorf("%s: %w", command, m.Error)
		case m.Return != nil:
			if result == nil {
				return nil
			}
			if err := json.Unmarshal(*m.Return, result); err != nil {
				return fmt.Errorf("qmp: decode %s result: %w", command, err)
			}
			return nil
		}
	}
}

func mustJSON(m Message) []byte {
	b, _ := json.Marshal(struct {
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data,omitempty"`
	}{m.Event, m.Data})
	return b
}

// Events returns and forgets the events seen so far while waiting for
// command results.
func (c *Client) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	ev := c.events
	c.events = nil
	return ev
}

// Close closes the connection; QEMU keeps running.
func (c *Client) Close() error { return c.conn.Close() }

// Status is the answer of query-status.
type Status struct {
	Running bool `json:"running"`
	// Status is QEMU's run state: "running", "paused", "shutdown",
	// "prelaunch", "suspended", "internal-error"…
	Status string `json:"status"`
}

// QueryStatus runs query-status.
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := c.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// KVM is the answer of query-kvm.
type KVM struct {
	Enabled bool `json:"enabled"`
	Present bool `json:"present"`
}

// QueryKVM runs query-kvm.
func (c *Client) QueryKVM(ctx context.Context) (KVM, error) {
	var k KVM
	err := c.Execute(ctx, "query-kvm", nil, &k)
	return k, err
}
