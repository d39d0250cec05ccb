package diskless

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// NBD protocol constants (https://github.com/NetworkBlockDevice/nbd, doc/proto.md).
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic        = 0x49484156454f5054 // "IHAVEOPT"
	repMagic        = 0x3e889045565a9
	requestMagic    = 0x25609513
	simpleReplyMagc = 0x67446698

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	optExportName = 1
	optAbort      = 2
	optList       = 3
	optInfo       = 6
	optGo         = 7

	repAck        = 1
	repServer     = 2
	repInfo       = 3
	repErrUnsup   = 1<<31 + 1
	repErrPolicy  = 1<<31 + 2
	repErrInvalid = 1<<31 + 3
	repErrUnknown = 1<<31 + 6

	infoExport = 0

	tfHasFlags    = 1 << 0
	tfSendFlush   = 1 << 2
	tfSendFUA     = 1 << 3
	tfWriteZeroes = 1 << 6

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdWriteZeroes = 6
	cmdFlagFUA     = 1 << 0

	errPerm   = 1
	errIO     = 5
	errInval  = 22
	errNoSpc  = 28
	errNotSup = 95

	maxRequest = 32 << 20
)

// Config configures a Server.
type Config struct {
	// ClientsDir holds one directory per client MAC (DATA/netboot/clients):
	// its overlay.img and overlay.map.
	ClientsDir string
	// Image returns the shared base image (a file system image, e.g. ext4)
	// a client boots, or false if the MAC may not boot a diskless root.
	Image func(mac net.HardwareAddr) (path string, ok bool)
	// Allow, if set, vets a client's address for its MAC (e.g. against
	// DHCP leases); false refuses the export.
	Allow func(remote net.Addr, mac net.HardwareAddr) bool
	// Log receives connection and error lines; nil discards.
	Log *slog.Logger
}

// Stats are a Server's counters.
type Stats struct {
	Connections  uint64 `json:"connections"`   // NBD connections accepted
	Exports      uint64 `json:"exports"`       // root exports handed to clients
	Refused      uint64 `json:"refused"`       // unknown or refused exports
	Active       int64  `json:"active"`        // clients connected now
	BytesRead    uint64 `json:"bytes_read"`    // bytes read by clients
	BytesWritten uint64 `json:"bytes_written"` // bytes written by clients into their layers
	Flushes      uint64 `json:"flushes"`       // flushes (durability points)
	Errors       uint64 `json:"errors"`        // requests answered with an error, protocol errors
}

// Server exports diskless roots over NBD: each client (by MAC, the export
// name) gets the shared base image with its own copy-on-write layer.
type Server struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	clients map[string]*client // by MAC

	conns, exports, refused, bytesRead, bytesWritten, flushes, errs atomic.Uint64
	active                                                          atomic.Int64
}

// client is one MAC's open layer and the connection using it.
type client struct {
	ov   *overlay
	conn net.Conn
	done chan struct{}
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.ClientsDir == "" {
		return nil, errors.New("diskless: ClientsDir is empty: name the directory for the clients' writable layers")
	}
	if cfg.Image == nil {
		return nil, errors.New("diskless: Image is nil: the server needs to know which image each client boots")
	}
	if err := os.MkdirAll(cfg.ClientsDir, 0o700); err != nil {
		return nil, fmt.Errorf("diskless: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, clients: map[string]*client{}}, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections: s.conns.Load(), Exports: s.exports.Load(), Refused: s.refused.Load(),
		Active: s.active.Load(), BytesRead: s.bytesRead.Load(), BytesWritten: s.bytesWritten.Load(),
		Flushes: s.flushes.Load(), Errors: s.errs.Load(),
	}
}

// ClientDir is where a client's writable layer lives.
func (s *Server) ClientDir(mac net.HardwareAddr) string {
	return filepath.Join(s.cfg.ClientsDir, strings.ReplaceAll(mac.String(), ":", "-"))
}

// Written reports how many bytes of its root a client has changed.
func (s *Server) Written(mac net.HardwareAddr) (int64, error) {
	s.mu.Lock()
	if cl := s.clients[mac.String()]; cl != nil {
		s.mu.Unlock()
		return cl.ov.written(), nil
	}
	s.mu.Unlock()
	if _, err := os.Stat(filepath.Join(s.ClientDir(mac), "overlay.map")); err != nil {
		return 0, err
	}
	path, ok := s.cfg.Image(mac)
	if !ok {
		return 0, fmt.Errorf("no image for %s", mac)
	}
	o, err := openOverlay(s.ClientDir(mac), path)
	if err != nil {
		return 0, err
	}
	defer o.close()
	return o.written(), nil
}

// Reset discards a client's writable layer (its root returns to the
// image). It fails while the client is connected.
func (s *Server) Reset(mac net.HardwareAddr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.clients[mac.String()]; busy {
		return fmt.Errorf("client %s is connected: power it off first", mac)
	}
	return os.RemoveAll(s.ClientDir(mac))
}

// Serve accepts NBD connections on ln until ctx is cancelled, then closes
// the client connections, waits for them and returns ctx's error. The
// caller binds ln where diskless roots are to be served.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			break
		}
		s.conns.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cstop := context.AfterFunc(ctx, func() { c.Close() })
			defer cstop()
			defer c.Close()
			if err := s.handle(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.errs.Add(1)
				s.log.Warn("diskless: connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
	wg.Wait()
	return err
}

type conn struct {
	net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func (c *conn) u32() (uint32, error) {
	var b [4]byte
	_, err := io.ReadFull(c.r, b[:])
	return binary.BigEndian.Uint32(b[:]), err
}

func (c *conn) u64() (uint64, error) {
	var b [8]byte
	_, err := io.ReadFull(c.r, b[:])
	return binary.BigEndian.Uint64(b[:]), err
}

func (c *conn) reply(opt, typ uint32, data []byte) error {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], repMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	c.w.Write(h[:])
	c.w.Write(data)
	return c.w.Flush()
}

func (s *Server) handle(nc net.Conn) error {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(15 * time.Second)
	}
	c := &conn{Conn: nc, r: bufio.NewReaderSize(nc, 256<<10), w: bufio.NewWriterSize(nc, 256<<10)}
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second)) // for the handshake
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], nbdMagic)
	binary.BigEndian.PutUint64(hello[8:], optMagic)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := nc.Write(hello[:]); err != nil {
		return err
	}
	cflags, err := c.u32()
	if err != nil {
		return err
	}
	noZeroes := cflags&flagNoZeroes != 0
	for {
		magic, err := c.u64()
		if err != nil {
			return err
		}
		opt, err := c.u32()
		if err != nil {
			return err
		}
		n, err := c.u32()
		if err != nil {
			return err
		}
		if magic != optMagic || n > 64<<10 {
			return fmt.Errorf("bad option header (magic %#x, length %d)", magic, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return err
		}
		switch opt {
		case optAbort:
			_ = c.reply(opt, repAck, nil)
			return nil
		case optList:
			// Exports are per client; listing them would leak MACs.
			if err := c.reply(opt, repAck, nil); err != nil {
				return err
			}
		case optExportName:
			ov, mac, err := s.export(nc, string(data))
			if err != nil {
				return err // the protocol has no error reply here: hang up
			}
			var b [10 + 124]byte
			binary.BigEndian.PutUint64(b[0:], uint64(ov.size))
			binary.BigEndian.PutUint16(b[8:], tfHasFlags|tfSendFlush|tfSendFUA|tfWriteZeroes)
			out := b[:10]
			if !noZeroes {
				out = b[:]
			}
			c.w.Write(out)
			if err := c.w.Flush(); err != nil {
				s.release(mac, nc)
				return err
			}
			return s.transmit(c, ov, mac)
		case optInfo, optGo:
			if len(data) < 6 {
				if err := c.reply(opt, repErrInvalid, nil); err != nil {
					return err
				}
				continue
			}
			nl := binary.BigEndian.Uint32(data)
			if uint64(nl)+6 > uint64(len(data)) {
				if err := c.reply(opt, repErrInvalid, nil); err != nil {
					return err
				}
				continue
			}
			name := string(data[4 : 4+nl])
			ov, mac, err := s.export(nc, name)
			if err != nil {
				code := uint32(repErrUnknown)
				if errors.Is(err, errPolicy) {
					code = repErrPolicy
				}
				if err := c.reply(opt, code, []byte(err.Error())); err != nil {
					return err
				}
				continue
			}
			var info [12]byte
			binary.BigEndian.PutUint16(info[0:], infoExport)
			binary.BigEndian.PutUint64(info[2:], uint64(ov.size))
			binary.BigEndian.PutUint16(info[10:], tfHasFlags|tfSendFlush|tfSendFUA|tfWriteZeroes)
			if err := c.reply(opt, repInfo, info[:]); err != nil {
				s.release(mac, nc)
				return err
			}
			if err := c.reply(opt, repAck, nil); err != nil {
				s.release(mac, nc)
				return err
			}
			if opt == optInfo {
				s.release(mac, nc)
				continue
			}
			return s.transmit(c, ov, mac)
		default:
			if err := c.reply(opt, repErrUnsup, nil); err != nil {
				return err
			}
		}
	}
}

var errPolicy = errors.New("refused by policy")

// export opens the layer for the MAC in name. A connection already using
// it (a client that rebooted without disconnecting) is closed first.
func (s *Server) export(nc net.Conn, name string) (*overlay, net.HardwareAddr, error) {
	mac, err := parseMAC(name)
	if err != nil {
		s.refused.Add(1)
		s.log.Warn("diskless: refused export", "remote", nc.RemoteAddr().String(), "name", name, "err", err)
		return nil, nil, err
	}
	img, ok := s.cfg.Image(mac)
	if !ok {
		s.refused.Add(1)
		s.log.Warn("diskless: no diskless root for client", "remote", nc.RemoteAddr().String(), "mac", mac.String())
		return nil, nil, fmt.Errorf("no diskless root for %s", mac)
	}
	if s.cfg.Allow != nil && !s.cfg.Allow(nc.RemoteAddr(), mac) {
		s.refused.Add(1)
		s.log.Warn("diskless: client address refused for MAC", "remote", nc.RemoteAddr().String(), "mac", mac.String())
		return nil, nil, fmt.Errorf("%w: %s may not use %s's root", errPolicy, nc.RemoteAddr(), mac)
	}
	key := mac.String()
	for {
		s.mu.Lock()
		old := s.clients[key]
		if old == nil {
			ov, err := openOverlay(s.ClientDir(mac), img)
			if err != nil {
				s.mu.Unlock()
				s.errs.Add(1)
				s.log.Error("diskless: cannot open client layer", "mac", key, "err", err)
				return nil, nil, err
			}
			s.clients[key] = &client{ov: ov, conn: nc, done: make(chan struct{})}
			s.mu.Unlock()
			s.exports.Add(1)
			s.active.Add(1)
			s.log.Info("diskless: root exported", "mac", key, "remote", nc.RemoteAddr().String(), "image", img)
			return ov, mac, nil
		}
		s.mu.Unlock()
		s.log.Info("diskless: client reconnected; closing its old connection", "mac", key)
		old.conn.Close()
		select {
		case <-old.done:
		case <-time.After(10 * time.Second):
			return nil, nil, fmt.Errorf("old connection of %s did not end", key)
		}
	}
}

// release flushes and closes a client's layer when its connection ends.
func (s *Server) release(mac net.HardwareAddr, nc net.Conn) {
	s.mu.Lock()
	cl := s.clients[mac.String()]
	if cl == nil || cl.conn != nc {
		s.mu.Unlock()
		return
	}
	delete(s.clients, mac.String())
	s.mu.Unlock()
	if err := cl.ov.Flush(); err != nil {
		s.log.Error("diskless: flush at disconnect", "mac", mac.String(), "err", err)
	}
	cl.ov.close()
	s.active.Add(-1)
	close(cl.done)
}

func parseMAC(s string) (net.HardwareAddr, error) {
	s = strings.TrimPrefix(s, "/")
	if len(s) == 12 && !strings.ContainsAny(s, ":-") {
		s = s[0:2] + ":" + s[2:4] + ":" + s[4:6] + ":" + s[6:8] + ":" + s[8:10] + ":" + s[10:12]
	}
	mac, err := net.ParseMAC(strings.ReplaceAll(s, "-", ":"))
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("export name %q is not a client MAC address (aa:bb:cc:dd:ee:ff)", s)
	}
	return mac, nil
}

// transmit serves requests until the client disconnects. Replies are
// buffered and written when no further request is already waiting, so a
// queue of reads goes out in few system calls.
func (s *Server) transmit(c *conn, ov *overlay, mac net.HardwareAddr) error {
	defer s.release(mac, c.Conn)
	_ = c.SetDeadline(time.Time{})
	var hdr [28]byte
	buf := make([]byte, 128<<10)
	var rep [16]byte
	binary.BigEndian.PutUint32(rep[0:], simpleReplyMagc)
	for {
		if c.r.Buffered() == 0 {
			if err := c.w.Flush(); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(hdr[0:]) != requestMagic {
			return fmt.Errorf("bad request magic %#x", binary.BigEndian.Uint32(hdr[0:]))
		}
		flags := binary.BigEndian.Uint16(hdr[4:])
		typ := binary.BigEndian.Uint16(hdr[6:])
		copy(rep[8:], hdr[8:16]) // handle
		off := int64(binary.BigEndian.Uint64(hdr[16:]))
		n := int64(binary.BigEndian.Uint32(hdr[24:]))
		var code uint32
		switch typ {
		case cmdRead:
			if n > maxRequest || off < 0 || off+n > ov.size {
				code = errInval
				break
			}
			if int64(len(buf)) < n {
				buf = make([]byte, n)
			}
			if _, err := ov.ReadAt(buf[:n], off); err != nil {
				s.log.Error("diskless: read", "mac", mac.String(), "offset", off, "err", err)
				code = errIO
				break
			}
			binary.BigEndian.PutUint32(rep[4:], 0)
			s.bytesRead.Add(uint64(n))
			if n < 64<<10 {
				c.w.Write(rep[:])
				c.w.Write(buf[:n])
				continue
			}
			// A large read goes out with one writev after what is
			// buffered, not through a copy into the buffer.
			if err := c.w.Flush(); err != nil {
				return err
			}
			bufs := net.Buffers{rep[:], buf[:n]}
			if _, err := bufs.WriteTo(c.Conn); err != nil {
				return err
			}
			continue
		case cmdWrite, cmdWriteZeroes:
			if n > maxRequest {
				return fmt.Errorf("write of %d bytes is larger than %d", n, maxRequest)
			}
			if int64(len(buf)) < n {
				buf = make([]byte, n)
			}
			if typ == cmdWrite {
				if _, err := io.ReadFull(c.r, buf[:n]); err != nil {
					return err
				}
			} else {
				clear(buf[:n])
			}
			if off < 0 || off+n > ov.size {
				code = errNoSpc
				break
			}
			if _, err := ov.WriteAt(buf[:n], off); err != nil {
				s.log.Error("diskless: write", "mac", mac.String(), "offset", off, "err", err)
				code = errIO
				break
			}
			s.bytesWritten.Add(uint64(n))
			if flags&cmdFlagFUA != 0 {
				if err := ov.Flush(); err != nil {
					code = errIO
				}
				s.flushes.Add(1)
			}
		case cmdFlush:
			if err := ov.Flush(); err != nil {
				s.log.Error("diskless: flush", "mac", mac.String(), "err", err)
				code = errIO
			}
			s.flushes.Add(1)
		case cmdDisc:
			return c.w.Flush()
		default:
			code = errNotSup
		}
		if code != 0 {
			s.errs.Add(1)
		}
		binary.BigEndian.PutUint32(rep[4:], code)
		c.w.Write(rep[:])
	}
}
