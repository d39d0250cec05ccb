package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/syncbuf"
)

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    request
		wantErr bool
	}{
		{"plain", rrq("pxelinux.0", "octet"), request{Op: opRRQ, Filename: "pxelinux.0", Mode: "octet"}, false},
		{"mode case", rrq("a", "OCTET"), request{Op: opRRQ, Filename: "a", Mode: "octet"}, false},
		{"options", rrq("a", "octet", "BlkSize", "1468", "tsize", "0"), request{Op: opRRQ, Filename: "a", Mode: "octet",
			Options: map[string]string{"blksize": "1468", "tsize": "0"}, Order: []string{"blksize", "tsize"}}, false},
		{"trailing pad", append(rrq("a", "netascii"), 0), request{Op: opRRQ, Filename: "a", Mode: "netascii"}, false},
		{"write", append([]byte{0, 2}, "f\x00octet\x00"...), request{Op: opWRQ, Filename: "f", Mode: "octet"}, false},
		{"short", []byte{0, 1}, request{}, true},
		{"not terminated", []byte("\x00\x01file\x00octet"), request{}, true},
		{"no mode", []byte("\x00\x01file\x00"), request{}, true},
		{"bad mode", rrq("a", "binary"), request{}, true},
		{"empty name", rrq("", "octet"), request{}, true},
		{"option without value", []byte("\x00\x01a\x00octet\x00blksize\x00"), request{}, true},
		{"duplicate option", rrq("a", "octet", "blksize", "8", "BLKSIZE", "9"), request{}, true},
		{"data opcode", []byte("\x00\x03\x00\x01hello"), request{}, true},
		{"nul in name splits mode", []byte("\x00\x01ok\x00../../etc/passwd\x00octet\x00"), request{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRequest(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, errMalformed) {
					t.Errorf("error %v does not wrap errMalformed", err)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	tests := []struct {
		name     string
		opts     []string
		maxBlk   int
		maxWin   int
		size     int64
		wantBlk  int
		wantWin  int
		wantOACK map[string]string
	}{
		{"none", nil, 65464, 0, 10, 512, 1, map[string]string{}},
		{"blksize", []string{"blksize", "1468"}, 65464, 0, 10, 1468, 1, map[string]string{"blksize": "1468"}},
		{"blksize capped", []string{"blksize", "65464"}, 1024, 0, 10, 1024, 1, map[string]string{"blksize": "1024"}},
		{"blksize too small ignored", []string{"blksize", "7"}, 65464, 0, 10, 512, 1, map[string]string{}},
		{"blksize junk ignored", []string{"blksize", "x"}, 65464, 0, 10, 512, 1, map[string]string{}},
		{"tsize", []string{"tsize", "0"}, 65464, 0, 12345, 512, 1, map[string]string{"tsize": "12345"}},
		{"timeout", []string{"timeout", "3"}, 65464, 0, 1, 512, 1, map[string]string{"timeout": "3"}},
		{"timeout out of range", []string{"timeout", "0"}, 65464, 0, 1, 512, 1, map[string]string{}},
		{"window", []string{"blksize", "1468", "windowsize", "64"}, 65464, 160 << 10, 1, 1468, 64,
			map[string]string{"blksize": "1468", "windowsize": "64"}},
		{"window capped in bytes", []string{"blksize", "65464", "windowsize", "8"}, 65464, 160 << 10, 1, 65464, 2,
			map[string]string{"blksize": "65464", "windowsize": "2"}},
		{"window cap disabled", []string{"blksize", "65464", "windowsize", "8"}, 65464, -1, 1, 65464, 8,
			map[string]string{"blksize": "65464", "windowsize": "8"}},
		{"window zero ignored", []string{"windowsize", "0"}, 65464, 0, 1, 512, 1, map[string]string{}},
		{"unknown ignored", []string{"multicast", "", "utimeout", "5"}, 65464, 0, 1, 512, 1, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parseRequest(rrq("f", "octet", tt.opts...))
			if err != nil {
				t.Fatal(err)
			}
			o := negotiate(r, tt.maxBlk, tt.maxWin, tt.size)
			if o.blksize != tt.wantBlk || o.window != tt.wantWin {
				t.Errorf("blksize, window = %d, %d; want %d, %d", o.blksize, o.window, tt.wantBlk, tt.wantWin)
			}
			if diff := cmp.Diff(tt.wantOACK, o.values); diff != "" {
				t.Errorf("OACK mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTransferSizesAndOptions(t *testing.T) { bothWaits(t, testTransferSizesAndOptions) }

func testTransferSizesAndOptions(t *testing.T, threads int) {
	dir := t.TempDir()
	sizes := []int{0, 1, 511, 512, 513, 1468 * 3, 100000}
	for _, n := range sizes {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%d", n)), randomBytes(n))
	}
	srv, addr := startServer(t, Config{Root: dir, MaxThreads: threads})
	optSets := [][]string{
		nil,
		{"blksize", "1468", "tsize", "0"},
		{"blksize", "8"},
		{"blksize", "1468", "windowsize", "4"},
		{"blksize", "65464", "windowsize", "8"},
	}
	var want uint64
	for _, n := range sizes {
		for _, opts := range optSets {
			t.Run(fmt.Sprintf("%d/%s", n, strings.Join(opts, "=")), func(t *testing.T) {
				c := newTestClient(t, addr)
				got, oack, err := c.get(fmt.Sprintf("f%d", n), opts...)
				if err != nil {
					t.Fatal(err)
				}
				data, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%d", n)))
				if !bytes.Equal(got, data) {
					t.Fatalf("got %d bytes, want %d, contents differ", len(got), len(data))
				}
				if len(opts) >= 4 && opts[2] == "tsize" && oack["tsize"] != fmt.Sprint(n) {
					t.Errorf("tsize = %q, want %d", oack["tsize"], n)
				}
				want += uint64(n)
			})
		}
	}
	waitIdle(t, srv)
	st := srv.Stats()
	if st.TransfersOK != uint64(len(sizes)*len(optSets)) || st.Bytes != want || st.TransfersFailed != 0 {
		t.Errorf("stats = %+v, want %d ok transfers of %d bytes", st, len(sizes)*len(optSets), want)
	}
}

// waitIdle waits until no transfer is active (the server counts a
// transfer as done once it has seen the last ACK).
func waitIdle(t *testing.T, s *Server) {
	t.Helper()
	for i := 0; i < 500 && s.Stats().Active > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRollover sends a file of more than 65535 blocks, so block numbers
// wrap to 0, in lock-step and in windows.
func TestRollover(t *testing.T) { bothWaits(t, testRollover) }

func testRollover(t *testing.T, threads int) {
	dir := t.TempDir()
	data := randomBytes(70000*8 + 3)
	writeFile(t, filepath.Join(dir, "big"), data)
	_, addr := startServer(t, Config{Root: dir, MaxThreads: threads})
	for _, opts := range [][]string{{"blksize", "8", "windowsize", "32"}, {"blksize", "8"}} {
		if testing.Short() && len(opts) == 2 {
			continue
		}
		c := newTestClient(t, addr)
		sawZero := false
		c.onData = func(blk uint16, _ int) { sawZero = sawZero || blk == 0 }
		got, _, err := c.get("big", opts...)
		if err != nil {
			t.Fatalf("%v: %v", opts, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%v: got %d bytes, want %d", opts, len(got), len(data))
		}
		if !sawZero {
			t.Errorf("%v: block number never rolled over to 0", opts)
		}
	}
}

// TestSorcerersApprentice: a client that ACKs every block twice must not
// make the server send any block twice.
func TestSorcerersApprentice(t *testing.T) { bothWaits(t, testSorcerersApprentice) }

func testSorcerersApprentice(t *testing.T, threads int) {
	dir := t.TempDir()
	data := randomBytes(512*200 + 10)
	writeFile(t, filepath.Join(dir, "f"), data)
	// A long timeout: on a loaded machine a timeout retransmission would
	// be a second copy too, and this test is about duplicate ACKs only.
	srv, addr := startServer(t, Config{Root: dir, Timeout: 30 * time.Second, MaxThreads: threads})
	for _, opts := range [][]string{nil, {"windowsize", "4"}} {
		c := newTestClient(t, addr)
		c.dupAcks = true
		got, _, err := c.get("f", opts...)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%v: err %v, %d bytes", opts, err, len(got))
		}
		if want := 201; c.dataPackets != want {
			t.Errorf("%v: received %d DATA packets, want exactly %d (duplicate ACKs were answered)", opts, c.dataPackets, want)
		}
	}
	waitIdle(t, srv)
	if r := srv.Stats().Retransmits; r != 0 {
		t.Errorf("retransmits = %d, want 0", r)
	}
}

// TestRetransmit: a lost block is sent again after the timeout, and a
// partial window ACK makes the server go back to the lost block.
func TestRetransmit(t *testing.T) { bothWaits(t, testRetransmit) }

func testRetransmit(t *testing.T, threads int) {
	dir := t.TempDir()
	data := randomBytes(512*40 + 1)
	writeFile(t, filepath.Join(dir, "f"), data)
	srv, addr := startServer(t, Config{Root: dir, Timeout: 50 * time.Millisecond, MaxThreads: threads})
	for _, opts := range [][]string{nil, {"windowsize", "8"}} {
		c := newTestClient(t, addr)
		c.dropOnce[3] = true
		c.dropOnce[20] = true
		got, _, err := c.get("f", opts...)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%v: err %v, %d bytes", opts, err, len(got))
		}
	}
	waitIdle(t, srv)
	if st := srv.Stats(); st.Retransmits == 0 || st.TransfersOK != 2 {
		t.Errorf("stats = %+v, want retransmits and 2 good transfers", st)
	}
}

// TestGiveUp: a client that never ACKs makes the transfer fail after the
// retries, and it is counted.
func TestGiveUp(t *testing.T) { bothWaits(t, testGiveUp) }

func testGiveUp(t *testing.T, threads int) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), randomBytes(2000))
	srv, addr := startServer(t, Config{Root: dir, Timeout: 20 * time.Millisecond, Retries: 2, MaxThreads: threads})
	c := newTestClient(t, addr)
	c.conn.WriteToUDP(rrq("f", "octet"), addr)
	deadline := time.Now().Add(30 * time.Second)
	for srv.Stats().TransfersFailed == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := srv.Stats(); st.TransfersFailed != 1 || st.Retransmits != 2 {
		t.Errorf("stats = %+v, want 1 failed transfer after 2 retransmits", st)
	}
}

func TestEscapesRefused(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	writeFile(t, filepath.Join(root, "ok"), []byte("fine"))
	writeFile(t, filepath.Join(root, "sub", "inner"), []byte("inner"))
	writeFile(t, filepath.Join(base, "secret"), []byte("secret"))
	if err := os.Symlink("../secret", filepath.Join(root, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/inner", filepath.Join(root, "in")); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	srv, addr := startServer(t, Config{Root: root, Log: slog.New(slog.NewTextHandler(&logs, nil))})

	tests := []struct {
		file     string
		wantCode int // -1: success
		want     string
		refused  bool
	}{
		{"ok", -1, "fine", false},
		{"/ok", -1, "fine", false},
		{root + "/ok", -1, "fine", false},
		{`sub\inner`, -1, "inner", false},
		{"in", -1, "inner", false},
		{"../secret", errAccessViolation, "", true},
		{"sub/../../secret", errAccessViolation, "", true},
		{"/../secret", errAccessViolation, "", true},
		{`..\secret`, errAccessViolation, "", true},
		{"out", errAccessViolation, "", true},
		{"abs", errAccessViolation, "", true},
		{"/etc/passwd", errFileNotFound, "", false},
		{"missing", errFileNotFound, "", false},
		{"sub", errAccessViolation, "", false},
	}
	refused := 0
	for _, tt := range tests {
		c := newTestClient(t, addr)
		got, _, err := c.get(tt.file)
		if tt.wantCode < 0 {
			if err != nil || string(got) != tt.want {
				t.Errorf("%q: got %q, %v; want %q", tt.file, got, err, tt.want)
			}
			continue
		}
		var te *tftpError
		if !errors.As(err, &te) || int(te.Code) != tt.wantCode {
			t.Errorf("%q: err = %v, want TFTP error %d", tt.file, err, tt.wantCode)
		}
		if tt.refused {
			refused++
		}
	}
	waitIdle(t, srv)
	if st := srv.Stats(); st.Refused != uint64(refused) {
		t.Errorf("refused = %d, want %d", st.Refused, refused)
	}
	if n := strings.Count(logs.String(), "refused path"); n != refused {
		t.Errorf("logged %d refusals, want %d; log:\n%s", n, refused, logs.String())
	}
	if strings.Contains(logs.String(), "secret\"") && !strings.Contains(logs.String(), "file=../secret") {
		t.Errorf("log does not name the refused request:\n%s", logs.String())
	}
}

func TestWriteRequestRefused(t *testing.T) {
	dir := t.TempDir()
	srv, addr := startServer(t, Config{Root: dir})
	c := newTestClient(t, addr)
	c.conn.WriteToUDP(append([]byte{0, opWRQ}, "upload\x00octet\x00"...), addr)
	buf := make([]byte, 600)
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if buf[1] != opERROR || buf[3] != errAccessViolation {
		t.Errorf("answer %q, want an access violation error", buf[:n])
	}
	if _, err := os.Stat(filepath.Join(dir, "upload")); !os.IsNotExist(err) {
		t.Errorf("upload exists: %v", err)
	}
	if st := srv.Stats(); st.WriteRequests != 1 {
		t.Errorf("write requests = %d, want 1", st.WriteRequests)
	}
}

func TestMalformedDropped(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), []byte("still served"))
	srv, addr := startServer(t, Config{Root: dir})
	c := newTestClient(t, addr)
	bad := [][]byte{{}, {0}, {0, 1}, {0, 9, 1, 2}, []byte("\x00\x01nonul"), []byte("\x00\x01f\x00bogus\x00"), make([]byte, 70000)}
	for _, b := range bad {
		c.conn.WriteToUDP(b, addr)
	}
	got, _, err := c.get("f")
	if err != nil || string(got) != "still served" {
		t.Fatalf("after malformed packets: %q, %v", got, err)
	}
	// A 70000-byte datagram does not fit in UDP over IPv4 and is never
	// sent; the other six arrive.
	if st := srv.Stats(); st.Malformed < 6 {
		t.Errorf("malformed = %d, want ≥ 6", st.Malformed)
	}
}

func TestNetascii(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "t"), []byte("a\nb\rc"))
	_, addr := startServer(t, Config{Root: dir})
	c := newTestClient(t, addr)
	c.conn.WriteToUDP(rrq("t", "netascii"), addr)
	buf := make([]byte, 600)
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[4:n]); got != "a\r\nb\r\x00c" {
		t.Errorf("netascii data %q", got)
	}
}

func TestMap(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pxelinux.cfg", "01-52-54-00-12-34-56"), []byte("per-mac"))
	writeFile(t, filepath.Join(dir, "pxelinux.cfg", "default"), []byte("default"))
	_, addr := startServer(t, Config{Root: dir, Map: func(_ *net.UDPAddr, p string) (string, bool) {
		if p == "pxelinux.cfg/default" {
			return "pxelinux.cfg/01-52-54-00-12-34-56", true
		}
		if p == "evil" {
			return "../../etc/passwd", true
		}
		return "", false
	}})
	c := newTestClient(t, addr)
	if got, _, err := c.get("pxelinux.cfg/default"); err != nil || string(got) != "per-mac" {
		t.Errorf("mapped: %q, %v", got, err)
	}
	c = newTestClient(t, addr)
	if _, _, err := c.get("evil"); err == nil {
		t.Error("a mapping out of the root was served")
	}
}

// TestConcurrentClients: 200 transfers at once, the first 16 waiting in
// their own threads, the others in the netpoller.
func TestConcurrentClients(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(64 << 10)
	writeFile(t, filepath.Join(dir, "f"), data)
	srv, addr := startServer(t, Config{Root: dir, MaxThreads: 16})
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newTestClient(t, addr)
			got, _, err := c.get("f", "blksize", "1468")
			if err == nil && !bytes.Equal(got, data) {
				err = fmt.Errorf("got %d bytes", len(got))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	waitIdle(t, srv)
	if st := srv.Stats(); st.TransfersOK != n {
		t.Errorf("transfers ok = %d, want %d", st.TransfersOK, n)
	}
}

func TestNewErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	writeFile(t, f, nil)
	for _, cfg := range []Config{{}, {Root: "/nonexistent/dir"}, {Root: f}, {Root: t.TempDir(), MaxBlockSize: 4}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// TestFileChanges: transfers send a file's current version. A file
// rewritten or replaced between transfers is sent as it is now, and a
// file truncated under a transfer ends that transfer with an error
// instead of crashing the server or sending stale bytes.
func TestFileChanges(t *testing.T) { bothWaits(t, testFileChanges) }

func testFileChanges(t *testing.T, threads int) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	srv, addr := startServer(t, Config{Root: dir, MaxThreads: threads})
	get := func() []byte {
		t.Helper()
		got, _, err := newTestClient(t, addr).get("f", "blksize", "1468")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	v1 := randomBytes(100000)
	writeFile(t, path, v1)
	if got := get(); !bytes.Equal(got, v1) {
		t.Fatal("first version differs")
	}
	v2 := randomBytes(100000) // same size, rewritten in place
	writeFile(t, path, v2)
	if got := get(); !bytes.Equal(got, v2) {
		t.Fatal("rewritten file: got the old contents")
	}
	v3 := randomBytes(300000) // replaced by a new, larger file
	writeFile(t, path+".new", v3)
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if got := get(); !bytes.Equal(got, v3) {
		t.Fatal("replaced file: got the old contents")
	}

	// Truncated after the first block: the next blocks lie beyond the end
	// of the file's mapping.
	c := newTestClient(t, addr)
	c.onData = func(blk uint16, _ int) {
		if blk == 1 {
			if err := os.Truncate(path, 0); err != nil {
				t.Error(err)
			}
		}
	}
	_, _, err := c.get("f", "blksize", "1468")
	var te *tftpError
	if !errors.As(err, &te) || te.Code != errNotDefined {
		t.Fatalf("download of a file truncated meanwhile: err = %v, want a TFTP error", err)
	}
	waitIdle(t, srv)
	if st := srv.Stats(); st.TransfersFailed != 1 || st.TransfersOK != 3 {
		t.Errorf("stats = %+v, want 3 good transfers and 1 failed", st)
	}
}

// TestFileCacheBounded: transfers of many files keep at most maxIdleFiles
// mappings, and none once Serve has returned.
func TestFileCacheBounded(t *testing.T) {
	dir := t.TempDir()
	n := maxIdleFiles + 5
	for i := range n {
		writeFile(t, filepath.Join(dir, fmt.Sprint(i)), randomBytes(1000+i))
	}
	s, addr, stop := serveUntilStopped(t, Config{Root: dir})
	for i := range n {
		if _, _, err := newTestClient(t, addr).get(fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, s)
	if got := s.files.cached(); got != maxIdleFiles {
		t.Errorf("after %d files, %d are cached, want %d", n, got, maxIdleFiles)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Serve returned %v, want context.Canceled", err)
	}
	if got := s.files.cached(); got != 0 {
		t.Errorf("after Serve returned, %d files are still cached", got)
	}
}

// bothWaits runs a test with transfers waiting in blocking system calls
// (threads) and in the netpoller.
func bothWaits(t *testing.T, f func(t *testing.T, threads int)) {
	t.Run("threads", func(t *testing.T) { f(t, 0) })
	t.Run("netpoller", func(t *testing.T) { f(t, -1) })
}

// TestCancel: cancelling Serve ends transfers waiting for an ACK at once,
// in both ways of waiting, and Serve returns.
func TestCancel(t *testing.T) { bothWaits(t, testCancel) }

func testCancel(t *testing.T, threads int) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), randomBytes(5000))
	s, addr, stop := serveUntilStopped(t, Config{Root: dir, Timeout: time.Minute, MaxThreads: threads})
	c := newTestClient(t, addr)
	c.conn.WriteToUDP(rrq("f", "octet"), addr)
	buf := make([]byte, 600)
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.conn.ReadFromUDP(buf); err != nil { // block 1, never ACKed
		t.Fatal(err)
	}
	if a := s.Stats().Active; a != 1 {
		t.Fatalf("active = %d, want 1", a)
	}
	done := make(chan error, 1)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return after cancel: the waiting transfer was not woken")
	}
	if st := s.Stats(); st.Active != 0 || st.TransfersFailed != 1 {
		t.Errorf("stats = %+v, want no active and 1 failed transfer", st)
	}
}

// serveUntilStopped runs a server on a loopback port until stop is
// called; stop cancels Serve and returns its error.
func serveUntilStopped(t *testing.T, cfg Config) (*Server, *net.UDPAddr, func() error) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	stop := func() error {
		cancel()
		return <-done
	}
	return s, conn.LocalAddr().(*net.UDPAddr), stop
}

// TestSegmentationFallback: when the kernel refuses a UDP_SEGMENT message
// (here a malformed control message stands in for an old kernel or a
// route without checksum offload), the window is sent again one datagram
// per block, complete and in order.
func TestSegmentationFallback(t *testing.T) {
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conn, err := dialSock(net.IPv4(127, 0, 0, 1), peer.LocalAddr().(*net.UDPAddr), false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.close()
	data := randomBytes(20*100 + 7)
	for _, broken := range []bool{false, true} {
		snd := &sender{conn: conn, data: data, blksize: 100, window: 21, c: &counters{}}
		snd.prepare()
		if snd.seg < 2 {
			t.Fatalf("segmentation not set up: seg = %d", snd.seg)
		}
		if broken {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&snd.gso[0]))
			h.SetLen(unix.CmsgLen(1))
		}
		if err := snd.send(1, 21); err != nil {
			t.Fatalf("broken=%v: %v", broken, err)
		}
		if broken && snd.seg != 0 {
			t.Errorf("seg = %d after the kernel refused segmentation, want 0", snd.seg)
		}
		buf := make([]byte, 200)
		var got []byte
		for want := uint16(1); want <= 21; want++ {
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := peer.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("broken=%v: block %d: %v", broken, want, err)
			}
			if op, blk := binary.BigEndian.Uint16(buf), binary.BigEndian.Uint16(buf[2:]); op != opDATA || blk != want {
				t.Fatalf("broken=%v: got opcode %d block %d, want DATA %d", broken, op, blk, want)
			}
			got = append(got, buf[4:n]...)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("broken=%v: the datagrams carry %d bytes that differ from the file's %d", broken, len(got), len(data))
		}
	}
}
