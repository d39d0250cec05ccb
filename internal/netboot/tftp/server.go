package tftp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config configures a Server.
type Config struct {
	// Root is the directory served, read-only. Requests cannot leave it:
	// "..", symbolic links that point out of it and NUL bytes are refused.
	Root string
	// Map, if set, rewrites a requested path for a client (pxelinux.cfg
	// lookups, per-MAC files). It returns a path relative to Root and true,
	// or false to serve the path as requested. The result is checked like
	// any requested path.
	Map func(client *net.UDPAddr, path string) (string, bool)
	// MaxBlockSize caps the negotiated blksize (RFC 2348); 0 means 65464.
	MaxBlockSize int
	// MaxWindowBytes caps windowsize × blksize (RFC 7440 lets the server
	// answer a smaller window). Bursts larger than the client's socket
	// receive buffer are dropped by the client's kernel and collapse into
	// timeouts; 0 means 160 KiB, which fits Linux's default 208 KiB buffer.
	// A negative value disables the cap.
	MaxWindowBytes int
	// Timeout is the retransmission timeout when the client does not ask
	// for one (RFC 2349); 0 means 1 s.
	Timeout time.Duration
	// Retries is how many times a packet is sent again before a transfer
	// is given up; 0 means 5.
	Retries int
	// MaxTransfers limits concurrent transfers; further requests get a
	// "server busy" error. 0 means 1024.
	MaxTransfers int
	// MaxThreads is how many transfers wait for ACKs in blocking system
	// calls, an OS thread each, which answers lock-step clients fastest;
	// further transfers wait in Go's netpoller and share the threads. 0
	// means 64; a negative value puts every transfer in the netpoller.
	MaxThreads int
	// Log receives one line per finished transfer and per refused request;
	// nil discards.
	Log *slog.Logger
}

// Stats are a Server's counters since it was created.
type Stats struct {
	Requests        uint64 `json:"requests"`         // read and write requests received
	TransfersOK     uint64 `json:"transfers_ok"`     // files sent completely
	TransfersFailed uint64 `json:"transfers_failed"` // transfers that timed out or were aborted
	Active          int64  `json:"active"`           // transfers in progress
	Bytes           uint64 `json:"bytes"`            // file bytes of completed transfers
	Retransmits     uint64 `json:"retransmits"`      // packets sent again after a timeout or loss
	Errors          uint64 `json:"errors"`           // error packets sent (not found, refused, busy…)
	Refused         uint64 `json:"refused"`          // paths refused as escapes from the root
	WriteRequests   uint64 `json:"write_requests"`   // write requests, always refused
	Malformed       uint64 `json:"malformed"`        // packets dropped because they are not valid TFTP
}

type counters struct {
	requests, ok, failed, bytes, retransmits, errors, refused, writes, malformed atomic.Uint64
	active                                                                       atomic.Int64
	threads                                                                      atomic.Int64 // transfers waiting in blocking system calls
}

// Server is a read-only TFTP server.
type Server struct {
	cfg   Config
	root  *os.Root
	abs   string
	log   *slog.Logger
	c     counters
	files fileCache
	mu    sync.Mutex
	inUse map[string]bool // client address → a transfer is active
}

// New checks cfg and returns a Server for it.
func New(cfg Config) (*Server, error) {
	if cfg.Root == "" {
		return nil, errors.New("tftp: Root is empty: name the directory to serve")
	}
	abs, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("tftp: root %q: %w", cfg.Root, err)
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("tftp: root: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("tftp: root %q is not a directory", abs)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("tftp: open root: %w", err)
	}
	if cfg.MaxBlockSize == 0 || cfg.MaxBlockSize > maxBlockSize {
		cfg.MaxBlockSize = maxBlockSize
	}
	if cfg.MaxBlockSize < minBlockSize {
		return nil, fmt.Errorf("tftp: MaxBlockSize %d is below the minimum %d", cfg.MaxBlockSize, minBlockSize)
	}
	if cfg.MaxWindowBytes == 0 {
		cfg.MaxWindowBytes = 160 << 10
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = 1024
	}
	if cfg.MaxThreads == 0 {
		cfg.MaxThreads = 64
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, root: root, abs: abs, log: log, inUse: map[string]bool{}}, nil
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:        s.c.requests.Load(),
		TransfersOK:     s.c.ok.Load(),
		TransfersFailed: s.c.failed.Load(),
		Active:          s.c.active.Load(),
		Bytes:           s.c.bytes.Load(),
		Retransmits:     s.c.retransmits.Load(),
		Errors:          s.c.errors.Load(),
		Refused:         s.c.refused.Load(),
		WriteRequests:   s.c.writes.Load(),
		Malformed:       s.c.malformed.Load(),
	}
}

// Serve answers requests arriving on conn until ctx is cancelled, then
// waits for the transfers in progress to stop and returns ctx's error.
// Each transfer runs in its own goroutine on its own ephemeral socket (a
// new transfer ID, as RFC 1350 asks) bound to conn's local address. The
// caller binds conn to the address it wants served and closes it after
// Serve returns.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	_ = conn.SetReadBuffer(4 << 20)
	local, _ := conn.LocalAddr().(*net.UDPAddr)
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, maxPacket+1)
	var err error
	for {
		var n int
		var addr *net.UDPAddr
		n, addr, err = conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				break
			}
			s.log.Warn("tftp: read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.handle(ctx, conn, local, addr, buf[:n], &wg)
	}
	wg.Wait()
	s.files.close()
	return err
}

func (s *Server) handle(ctx context.Context, conn *net.UDPConn, local, addr *net.UDPAddr, pkt []byte, wg *sync.WaitGroup) {
	if len(pkt) > maxPacket {
		s.c.malformed.Add(1)
		return
	}
	req, err := parseRequest(pkt)
	if err != nil {
		s.c.malformed.Add(1)
		s.log.Debug("tftp: dropped malformed packet", "client", addr.String(), "err", err)
		return
	}
	s.c.requests.Add(1)
	if req.Op == opWRQ {
		s.c.writes.Add(1)
		s.log.Warn("tftp: write request refused", "client", addr.String(), "file", req.Filename)
		s.sendError(conn, addr, errAccessViolation, "this TFTP server is read-only; write requests are refused")
		return
	}
	key := addr.String()
	s.mu.Lock()
	if s.inUse[key] {
		// The client sent its request again before our first answer
		// arrived; the transfer already running answers it.
		s.mu.Unlock()
		return
	}
	if s.c.active.Load() >= int64(s.cfg.MaxTransfers) {
		s.mu.Unlock()
		s.sendError(conn, addr, errNotDefined, "server busy: too many transfers, try again")
		return
	}
	s.inUse[key] = true
	s.c.active.Add(1)
	s.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.inUse, key)
			s.c.active.Add(-1)
			s.mu.Unlock()
		}()
		s.transfer(ctx, local, addr, req)
	}()
}

func (s *Server) sendError(conn *net.UDPConn, addr *net.UDPAddr, code uint16, msg string) {
	s.c.errors.Add(1)
	_, _ = conn.WriteToUDP(appendError(nil, code, msg), addr)
}

// errRefused marks requests for paths outside the root.
var errRefused = errors.New("path refused")

// open resolves a requested name for a client and opens it inside the
// root. Escapes return an error wrapping errRefused.
func (s *Server) open(client *net.UDPAddr, name string) (*os.File, os.FileInfo, string, error) {
	// Windows boot loaders ask for boot\x64\wdsnbp.com.
	name = strings.ReplaceAll(name, `\`, "/")
	if s.cfg.Map != nil {
		if m, ok := s.cfg.Map(client, name); ok {
			name = m
		}
	}
	rel, err := s.relative(name)
	if err != nil {
		return nil, nil, name, err
	}
	f, err := s.root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if strings.Contains(err.Error(), "escapes") {
			return nil, nil, rel, fmt.Errorf("%w: %q leads out of the TFTP root", errRefused, name)
		}
		return nil, nil, rel, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, rel, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, rel, fmt.Errorf("%q is not a regular file: %w", rel, os.ErrPermission)
	}
	return f, fi, rel, nil
}

// relative turns a requested name into a path relative to the root.
// An absolute path inside the root (as dnsmasq allows) loses the root's
// prefix; any other leading slash is dropped, so "/pxelinux.0" is the
// root's pxelinux.0 (GRUB asks like that, and tftpd-hpa -s answers so).
func (s *Server) relative(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL byte in file name", errRefused)
	}
	if strings.HasPrefix(name, "/") {
		if strings.HasPrefix(name, s.abs+"/") {
			name = name[len(s.abs)+1:]
		}
		name = strings.TrimLeft(name, "/")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q contains \"..\"", errRefused, name)
		}
	}
	name = filepath.Clean(name)
	if name == "." || name == "" {
		return "", fmt.Errorf("%q names the root directory, not a file: %w", name, os.ErrNotExist)
	}
	return name, nil
}
