package tftp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxNetascii is the largest file sent in netascii mode, which is converted
// in memory (boot files are octet; netascii is for text).
const maxNetascii = 32 << 20

// transfer sends one file to one client from a new socket.
func (s *Server) transfer(ctx context.Context, local, client *net.UDPAddr, req request) {
	start := time.Now()
	var lip net.IP
	if local != nil {
		lip = local.IP
	}
	conn, err := dialSock(lip, client)
	if err != nil {
		s.c.failed.Add(1)
		s.log.Warn("tftp: cannot open a transfer socket", "client", client.String(), "err", err)
		return
	}
	defer conn.close()
	stop := context.AfterFunc(ctx, conn.wake)
	defer stop()

	fail := func(code uint16, msg string) {
		s.c.errors.Add(1)
		_ = conn.write(appendError(nil, code, msg))
	}
	if req.Mode == "mail" {
		fail(errIllegalOp, "mail mode is not supported; use octet")
		s.c.failed.Add(1)
		return
	}
	f, rel, err := s.open(client, req.Filename)
	if err != nil {
		s.c.failed.Add(1)
		switch {
		case errors.Is(err, errRefused):
			s.c.refused.Add(1)
			s.log.Warn("tftp: refused path", "client", client.String(), "file", req.Filename, "err", err)
			fail(errAccessViolation, "access violation: the path leaves the TFTP root")
		case errors.Is(err, os.ErrNotExist):
			s.log.Info("tftp: file not found", "client", client.String(), "file", req.Filename, "path", rel)
			fail(errFileNotFound, "file not found")
		case errors.Is(err, os.ErrPermission):
			s.log.Info("tftp: permission denied", "client", client.String(), "file", req.Filename, "err", err)
			fail(errAccessViolation, "access violation: not a readable regular file")
		default:
			s.log.Warn("tftp: open", "client", client.String(), "file", req.Filename, "err", err)
			fail(errNotDefined, "cannot open file")
		}
		return
	}
	defer f.Close()

	var src io.ReaderAt = f
	fi, err := f.Stat()
	if err != nil {
		s.c.failed.Add(1)
		fail(errNotDefined, "cannot stat file")
		return
	}
	size := fi.Size()
	if req.Mode == "netascii" {
		if size > maxNetascii {
			s.c.failed.Add(1)
			fail(errNotDefined, fmt.Sprintf("file is larger than %d MiB; ask for it in octet mode", maxNetascii>>20))
			return
		}
		data, err := toNetascii(f)
		if err != nil {
			s.c.failed.Add(1)
			fail(errNotDefined, "cannot read file")
			return
		}
		src, size = bytes.NewReader(data), int64(len(data))
	}

	opts := negotiate(req, s.cfg.MaxBlockSize, s.cfg.MaxWindowBytes, size)
	timeout := s.cfg.Timeout
	if opts.timeout > 0 {
		timeout = time.Duration(opts.timeout) * time.Second
	}
	conn.setSendBuffer(max(4*(opts.blksize+32)*opts.window, 1<<20))

	t := &sender{
		conn:    conn,
		src:     src,
		size:    size,
		blksize: opts.blksize,
		window:  opts.window,
		timeout: timeout,
		retries: s.cfg.Retries,
		c:       &s.c,
	}
	if len(opts.accepted) > 0 {
		t.oack = appendOACK(nil, opts.accepted, opts.values)
	}
	err = t.run(ctx)
	attrs := []any{"client", client.String(), "file", req.Filename, "path", rel, "bytes", size,
		"blksize", opts.blksize, "windowsize", opts.window, "duration", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		s.c.failed.Add(1)
		s.log.Warn("tftp: transfer failed", append(attrs, "err", err)...)
		return
	}
	s.c.ok.Add(1)
	s.c.bytes.Add(uint64(size))
	s.log.Info("tftp: sent", attrs...)
}

// toNetascii converts a file to netascii (RFC 764): LF becomes CR LF and a
// bare CR becomes CR NUL.
func toNetascii(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	br := bufio.NewReader(r)
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		switch c {
		case '\n':
			out.WriteString("\r\n")
		case '\r':
			out.WriteString("\r\x00")
		default:
			out.WriteByte(c)
		}
		if out.Len() > 2*maxNetascii {
			return nil, errors.New("netascii conversion too large")
		}
	}
}

// sender runs the data phase of one transfer: lock-step (window 1) or
// windowed (RFC 7440) with go-back-N on loss.
type sender struct {
	conn    *sock
	src     io.ReaderAt
	size    int64
	blksize int
	window  int
	timeout time.Duration
	retries int
	oack    []byte
	c       *counters

	pkt []byte // one DATA packet, reused for every block
	ack []byte

	// Windowed transfers read a batch of blocks into slots and send them
	// with one sendmmsg call.
	slots [][]byte
	iov   []unix.Iovec
	msgs  []unix.Mmsghdr
}

// batchBytes bounds the memory of one sendmmsg batch.
const batchBytes = 512 << 10

// errGaveUp is returned when the client stopped answering.
var errGaveUp = errors.New("no answer from the client")

func (t *sender) run(ctx context.Context) error {
	t.pkt = make([]byte, 4+t.blksize)
	t.ack = make([]byte, maxPacket)
	binary.BigEndian.PutUint16(t.pkt, opDATA)
	last := t.size/int64(t.blksize) + 1 // the short (maybe empty) final block

	if t.oack != nil {
		if err := t.handshake(ctx); err != nil {
			return err
		}
	}
	var acked int64 // highest block acknowledged
	next := int64(1)
	tries := 0
	for {
		hi := min(acked+int64(t.window), last)
		if hi > next && t.window > 1 {
			if err := t.sendBatches(next, hi); err != nil {
				return err
			}
			next = hi + 1
		}
		for ; next <= hi; next++ {
			if err := t.sendBlock(next); err != nil {
				return err
			}
		}
		deadline := time.Now().Add(t.timeout)
		progressed := false
		for !progressed {
			n, err := t.conn.read(t.ack, deadline)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err == errTimeout {
					break
				}
				return err
			}
			blk, isErr, code, msg, err := parseAck(t.ack[:n])
			if err != nil {
				t.c.malformed.Add(1)
				continue
			}
			if isErr {
				return fmt.Errorf("client aborted with error %d: %q", code, msg)
			}
			// Map the 16-bit block number into the window sent: block
			// numbers roll over to 0 after 65535 on large files.
			d := int64(uint16(blk - uint16(acked)))
			if d == 0 || d > hi-acked {
				// A duplicate or stale ACK. Answering it would double
				// every later packet (Sorcerer's Apprentice), so only
				// the timeout sends anything again.
				continue
			}
			acked += d
			progressed = true
		}
		if acked == last {
			return nil
		}
		if progressed {
			tries = 0
			if next > acked+1 {
				// The client acknowledged part of the window: it lost
				// the block after, so go back to it (RFC 7440).
				t.c.retransmits.Add(uint64(next - acked - 1))
				next = acked + 1
			}
			continue
		}
		tries++
		if tries > t.retries {
			return fmt.Errorf("%w after %d tries at block %d", errGaveUp, tries, acked+1)
		}
		t.c.retransmits.Add(uint64(next - acked - 1))
		next = acked + 1
	}
}

// handshake sends the OACK until the client acknowledges it with ACK 0.
func (t *sender) handshake(ctx context.Context) error {
	for tries := 0; ; tries++ {
		if tries > t.retries {
			return fmt.Errorf("%w to the option acknowledgement", errGaveUp)
		}
		if tries > 0 {
			t.c.retransmits.Add(1)
		}
		if err := t.conn.write(t.oack); err != nil {
			return err
		}
		deadline := time.Now().Add(t.timeout)
		for {
			n, err := t.conn.read(t.ack, deadline)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err == errTimeout {
					break
				}
				return err
			}
			blk, isErr, code, msg, err := parseAck(t.ack[:n])
			if err != nil {
				t.c.malformed.Add(1)
				continue
			}
			if isErr {
				return fmt.Errorf("client refused the options with error %d: %q", code, msg)
			}
			if blk == 0 {
				return nil
			}
		}
	}
}

// sendBatches sends blocks from..to (inclusive) in sendmmsg batches.
func (t *sender) sendBatches(from, to int64) error {
	if t.slots == nil {
		n := max(1, min(t.window, batchBytes/(4+t.blksize), 1024))
		t.slots = make([][]byte, n)
		for i := range t.slots {
			t.slots[i] = make([]byte, 4+t.blksize)
			binary.BigEndian.PutUint16(t.slots[i], opDATA)
		}
		t.iov = make([]unix.Iovec, n)
		t.msgs = make([]unix.Mmsghdr, n)
	}
	for from <= to {
		k := int(min(int64(len(t.slots)), to-from+1))
		pkts := t.slots[:k]
		for i := range pkts {
			p, err := t.fill(pkts[i], from+int64(i))
			if err != nil {
				return err
			}
			pkts[i] = p
		}
		err := t.conn.writeBatch(pkts, t.iov, t.msgs)
		for i := range pkts {
			pkts[i] = pkts[i][:cap(pkts[i])]
		}
		if err != nil {
			return err
		}
		from += int64(k)
	}
	return nil
}

// fill reads block n (1-based) into pkt and returns the packet to send.
func (t *sender) fill(pkt []byte, n int64) ([]byte, error) {
	off := (n - 1) * int64(t.blksize)
	want := int(max(0, min(int64(t.blksize), t.size-off)))
	if want > 0 {
		got, err := t.src.ReadAt(pkt[4:4+want], off)
		if got < want {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read block %d: %w", n, err)
		}
	}
	binary.BigEndian.PutUint16(pkt[2:], uint16(n))
	return pkt[:4+want], nil
}

// sendBlock reads block n (1-based) from the file and sends it.
func (t *sender) sendBlock(n int64) error {
	p, err := t.fill(t.pkt, n)
	if err != nil {
		return err
	}
	return t.conn.write(p)
}
