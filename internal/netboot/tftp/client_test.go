package tftp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"
)

// testClient is a small TFTP reader used to drive the server into states
// real clients rarely reach (duplicate ACKs, lost blocks, partial window
// ACKs). Real clients (tftp-hpa, atftp) are exercised in realclient_test.go.
type testClient struct {
	conn *net.UDPConn
	srv  *net.UDPAddr

	// Hooks, all optional.
	dupAcks  bool                    // send every ACK twice
	dropOnce map[uint16]bool         // ignore the first arrival of these blocks
	ackAt    func(blk uint16) bool   // when set, ACK only blocks for which it is true (plus the last)
	onData   func(blk uint16, n int) // observes every DATA packet

	dataPackets int
	lastAck     []byte
}

func newTestClient(t *testing.T, srv *net.UDPAddr) *testClient {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testClient{conn: c, srv: srv, dropOnce: map[uint16]bool{}}
}

func rrq(name, mode string, opts ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, opRRQ)
	for _, s := range append([]string{name, mode}, opts...) {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b
}

// tftpError is an ERROR packet received by the test client.
type tftpError struct {
	Code uint16
	Msg  string
}

func (e *tftpError) Error() string { return fmt.Sprintf("tftp error %d: %s", e.Code, e.Msg) }

// get downloads name with the given options ("blksize", "1468", …) and
// returns the data and the OACK options.
func (c *testClient) get(name string, opts ...string) ([]byte, map[string]string, error) {
	if _, err := c.conn.WriteToUDP(rrq(name, "octet", opts...), c.srv); err != nil {
		return nil, nil, err
	}
	blksize, window := 512, 1
	oack := map[string]string{}
	var out bytes.Buffer
	var tid *net.UDPAddr
	expect := uint16(1)
	sinceAck := 0
	buf := make([]byte, 70000)
	// When nothing arrives, send the last ACK (or the request) again, as
	// real clients do.
	timeouts := 0
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := c.conn.ReadFromUDP(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() && timeouts < 10 {
			timeouts++
			if tid == nil {
				c.conn.WriteToUDP(rrq(name, "octet", opts...), c.srv)
			} else if c.lastAck != nil {
				c.conn.WriteToUDP(c.lastAck, tid)
			}
			continue
		}
		if err != nil {
			return out.Bytes(), oack, err
		}
		timeouts = 0
		if tid == nil {
			tid = from
		} else if from.Port != tid.Port {
			continue
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case opERROR:
			return nil, oack, &tftpError{binary.BigEndian.Uint16(p[2:]), string(bytes.TrimRight(p[4:], "\x00"))}
		case opOACK:
			f := bytes.Split(bytes.TrimSuffix(p[2:], []byte{0}), []byte{0})
			for i := 0; i+1 < len(f); i += 2 {
				oack[string(f[i])] = string(f[i+1])
			}
			if v, ok := oack["blksize"]; ok {
				blksize, _ = strconv.Atoi(v)
			}
			if v, ok := oack["windowsize"]; ok {
				window, _ = strconv.Atoi(v)
			}
			c.ack(tid, 0)
		case opDATA:
			c.dataPackets++
			blk := binary.BigEndian.Uint16(p[2:])
			if c.onData != nil {
				c.onData(blk, n-4)
			}
			if c.dropOnce[blk] {
				delete(c.dropOnce, blk)
				continue
			}
			if blk != expect {
				// Out of order: ACK the last block in order (RFC 7440).
				c.ack(tid, expect-1)
				sinceAck = 0
				continue
			}
			out.Write(p[4:n])
			expect++
			sinceAck++
			last := n-4 < blksize
			if last || sinceAck == window && (c.ackAt == nil || c.ackAt(blk)) {
				c.ack(tid, blk)
				sinceAck = 0
			}
			if last {
				return out.Bytes(), oack, nil
			}
		}
	}
}

func (c *testClient) ack(to *net.UDPAddr, blk uint16) {
	p := binary.BigEndian.AppendUint16(nil, opACK)
	p = binary.BigEndian.AppendUint16(p, blk)
	c.lastAck = p
	c.conn.WriteToUDP(p, to)
	if c.dupAcks {
		c.conn.WriteToUDP(p, to)
	}
}

// startServer runs a server on a loopback port for the test's lifetime.
func startServer(t *testing.T, cfg Config) (*Server, *net.UDPAddr) {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, addr, stop := serveUntilStopped(t, cfg)
	t.Cleanup(func() { _ = stop() })
	return s, addr
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
