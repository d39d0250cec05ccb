package tftp

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// FuzzParseRequest holds the request parser to never panicking and to
// returning only well-formed requests.
func FuzzParseRequest(f *testing.F) {
	f.Add(rrq("pxelinux.0", "octet"))
	f.Add(rrq("a", "netascii", "blksize", "1468", "tsize", "0", "windowsize", "64", "timeout", "3"))
	f.Add([]byte("\x00\x02up\x00octet\x00"))
	f.Add([]byte("\x00\x01\x00\x00"))
	f.Add([]byte("\x00\x04\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		if r.Filename == "" || (r.Op != opRRQ && r.Op != opWRQ) || len(r.Order) != len(r.Options) {
			t.Fatalf("accepted an invalid request: %+v", r)
		}
		o := negotiate(r, maxBlockSize, 160<<10, 1000)
		if o.blksize < minBlockSize || o.blksize > maxBlockSize || o.window < 1 || o.window > maxWindowSize {
			t.Fatalf("negotiated out of range: %+v", o)
		}
		parseAck(b)
	})
}

// FuzzServe sends arbitrary datagrams to a running server: it must keep
// serving, and every packet it cannot parse is counted.
func FuzzServe(f *testing.F) {
	f.Add(rrq("f", "octet", "blksize", "8"))
	f.Add(rrq("../f", "octet"))
	f.Add([]byte{0, 5, 0, 1, 'x', 0})
	dir := f.TempDir()
	writeFileF(f, filepath.Join(dir, "f"), []byte("data"))
	s, err := New(Config{Root: dir, Timeout: 1})
	if err != nil {
		f.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Serve(ctx, conn) }()
	f.Cleanup(func() { cancel(); wg.Wait(); conn.Close() })
	local := conn.LocalAddr().(*net.UDPAddr)
	var handlerWG sync.WaitGroup
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxPacket {
			return
		}
		before := s.Stats()
		s.handle(ctx, conn, local, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, b, &handlerWG)
		after := s.Stats()
		if _, err := parseRequest(b); err != nil && after.Malformed != before.Malformed+1 {
			t.Fatalf("malformed packet not counted: %+v", after)
		}
	})
}

func writeFileF(f *testing.F, path string, data []byte) {
	f.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		f.Fatal(err)
	}
}
