package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxNetascii is the largest file sent in netascii mode, which is converted
// in memory (boot files are octet; netascii is for text).
const maxNetascii = 32 << 20

// errNetasciiTooLarge refuses netascii for files above maxNetascii.
var errNetasciiTooLarge = fmt.Errorf("file is larger than %d MiB; ask for it in octet mode", maxNetascii>>20)

// transfer sends one file to one client from a new socket.
func (s *Server) transfer(ctx context.Context, local, client *net.UDPAddr, req request) {
	start := time.Now()
	var lip net.IP
	if local != nil {
		lip = local.IP
	}
	// Blocking waits answer fastest but hold a thread each; past
	// MaxThreads transfers wait in the netpoller.
	poll := true
	if s.c.threads.Add(1) <= int64(s.cfg.MaxThreads) {
		poll = false
		defer s.c.threads.Add(-1)
	} else {
		s.c.threads.Add(-1)
	}
	conn, err := dialSock(lip, client, poll)
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
	f, fi, rel, err := s.open(client, req.Filename)
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
	var data []byte
	if req.Mode == "netascii" {
		data, err = readNetascii(f, fi.Size())
	} else {
		var ct *content
		if ct, err = s.files.get(f, fi); err == nil {
			defer s.files.put(ct)
			data = ct.data
		}
	}
	f.Close() // a mapping outlives its descriptor
	if err != nil {
		s.c.failed.Add(1)
		s.log.Warn("tftp: read", "client", client.String(), "file", req.Filename, "path", rel, "err", err)
		msg := "cannot read file"
		if errors.Is(err, errNetasciiTooLarge) {
			msg = err.Error()
		}
		fail(errNotDefined, msg)
		return
	}
	size := int64(len(data))

	opts := negotiate(req, s.cfg.MaxBlockSize, s.cfg.MaxWindowBytes, size)
	timeout := s.cfg.Timeout
	if opts.timeout > 0 {
		timeout = time.Duration(opts.timeout) * time.Second
	}
	conn.setSendBuffer(max(4*(opts.blksize+32)*opts.window, 1<<20))

	t := &sender{
		conn:    conn,
		data:    data,
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
		if errors.Is(err, errShrunk) {
			fail(errNotDefined, "the file changed on the server while it was being sent; try again")
		}
		return
	}
	s.c.ok.Add(1)
	s.c.bytes.Add(uint64(size))
	s.log.Info("tftp: sent", attrs...)
}

// readNetascii reads a file of size bytes and converts it to netascii
// (RFC 764): LF becomes CR LF and a bare CR becomes CR NUL.
func readNetascii(f *os.File, size int64) ([]byte, error) {
	if size > maxNetascii {
		return nil, errNetasciiTooLarge
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxNetascii+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(raw) > maxNetascii {
		return nil, errNetasciiTooLarge
	}
	out := make([]byte, 0, len(raw)+len(raw)/16)
	for _, c := range raw {
		switch c {
		case '\n':
			out = append(out, '\r', '\n')
		case '\r':
			out = append(out, '\r', 0)
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

// sender runs the data phase of one transfer. Lock-step (RFC 1350) is a
// window of one block; RFC 7440 windows go back to the first lost block.
// DATA packets are gathered from a 4-byte header and the block's bytes in
// the file's mapping and sent with one sendmmsg call per batch, so no
// block is copied in user space and nothing is allocated per block.
type sender struct {
	conn    *sock
	data    []byte
	blksize int
	window  int
	timeout time.Duration
	retries int
	oack    []byte
	c       *counters

	ack    []byte
	hdrs   [][4]byte // the DATA header of each batch slot
	iov    []unix.Iovec
	msgs   []unix.Mmsghdr
	blocks []int  // blocks in each message
	seg    int    // blocks per message with UDP segmentation, 0 without
	gso    []byte // the UDP_SEGMENT control message
}

// maxBatch is the most DATA packets given to one sendmmsg call.
const maxBatch = 256

// yieldEvery is how often a transfer yields to the scheduler.
const yieldEvery = 2 * time.Millisecond

// errGaveUp is returned when the client stopped answering.
var errGaveUp = errors.New("no answer from the client")

// prepare allocates the buffers of a transfer, once.
func (t *sender) prepare() {
	t.ack = make([]byte, maxPacket)
	n := min(t.window, maxBatch)
	t.hdrs = make([][4]byte, n)
	for i := range t.hdrs {
		binary.BigEndian.PutUint16(t.hdrs[i][:], opDATA)
	}
	t.iov = make([]unix.Iovec, 2*n)
	t.msgs = make([]unix.Mmsghdr, n)
	t.blocks = make([]int, n)
	t.setupSegmentation()
}

func (t *sender) run(ctx context.Context) error {
	t.prepare()
	last := int64(len(t.data)/t.blksize) + 1 // the short (maybe empty) final block

	if t.oack != nil {
		if err := t.handshake(ctx); err != nil {
			return err
		}
	}
	yielded := time.Now()
	var acked int64 // highest block acknowledged
	next := int64(1)
	tries := 0
	for {
		hi := min(acked+int64(t.window), last)
		if next <= hi {
			if err := t.send(next, hi); err != nil {
				return err
			}
			next = hi + 1
		}
		now := time.Now()
		if now.Sub(yielded) > yieldEvery {
			// A goroutine that only ever returns from system calls
			// looks stuck to the runtime: after 10 ms its monitor takes
			// the P away at the next call and keeps polling every 20 µs,
			// which costs more than this.
			runtime.Gosched()
			yielded = now
		}
		deadline := now.Add(t.timeout)
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

// send sends blocks from..to (1-based, inclusive) in sendmmsg batches.
// With UDP segmentation offload (t.seg > 1), one message carries up to
// t.seg blocks — iovecs header, block, header, block… — and the kernel
// cuts it into one datagram per block (UDP_SEGMENT, all of 4+blksize
// bytes but the last), so a window passes the IP stack a few times rather
// than once per block. If the kernel or the route refuses segmentation
// (old kernels, no checksum offload, datagrams above the path MTU), the
// transfer goes on without it.
func (t *sender) send(from, to int64) error {
	bs := int64(t.blksize)
	size := int64(len(t.data))
	for from <= to {
		slot, nmsg := 0, 0
		for n := from; n <= to && slot < len(t.hdrs); nmsg++ {
			k := int(min(int64(max(t.seg, 1)), to-n+1, int64(len(t.hdrs)-slot)))
			first := slot
			niov := 0
			for ; k > 0; k-- {
				off := (n - 1) * bs
				end := min(off+bs, size)
				binary.BigEndian.PutUint16(t.hdrs[slot][2:], uint16(n))
				t.iov[niov+2*first].Base = &t.hdrs[slot][0]
				t.iov[niov+2*first].SetLen(4)
				niov++
				if end > off {
					t.iov[niov+2*first].Base = &t.data[off]
					t.iov[niov+2*first].SetLen(int(end - off))
					niov++
				}
				slot++
				n++
			}
			m := &t.msgs[nmsg].Hdr
			m.Iov = &t.iov[2*first]
			m.SetIovlen(niov)
			m.Control, m.Controllen = nil, 0
			if t.blocks[nmsg] = slot - first; t.blocks[nmsg] > 1 {
				m.Control = &t.gso[0]
				m.SetControllen(len(t.gso))
			}
		}
		sent, err := t.conn.writeBatch(t.msgs[:nmsg])
		for _, b := range t.blocks[:sent] {
			from += int64(b)
		}
		if err != nil {
			if t.seg > 1 && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIO) || errors.Is(err, unix.EMSGSIZE)) {
				t.seg = 0 // sent again below, one datagram per block
				continue
			}
			return fmt.Errorf("send blocks %d-%d: %w", from, to, err)
		}
	}
	return nil
}

// maxSegments is the most datagrams one UDP_SEGMENT message is cut into
// (the kernel's limit was 64 before Linux 6.9).
const maxSegments = 64

// setupSegmentation prepares UDP segmentation offload for windows: as
// many blocks per message as fit in one 64 KiB IP datagram.
func (t *sender) setupSegmentation() {
	t.seg = min(maxSegments, (0xffff-20-8)/(4+t.blksize), t.window)
	if t.seg < 2 {
		t.seg = 0
		return
	}
	t.gso = make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&t.gso[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&t.gso[unix.CmsgLen(0)])) = uint16(4 + t.blksize)
}
