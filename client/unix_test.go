package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// unixServer serves h on a unix socket in a temporary directory with
// net/http's server, counting the connections it accepts.
func unixServer(t *testing.T, h http.Handler) (sock string, conns *atomic.Int32, srv *http.Server) {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-client-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	conns = &atomic.Int32{}
	srv = &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock, conns, srv
}

func get(t *testing.T, hc *http.Client, ctx context.Context, path string) (string, http.Header, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://berth"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.Trailer, err
}

// TestUnixTransport checks the unix-socket transport against net/http's
// server: connections are reused once a body was read to its end, not
// after a body closed early, trailers arrive, a connection the server
// closed while idle is replaced transparently, and a cancelled request
// returns at once with the context's error.
func TestUnixTransport(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", 1<<20))
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-End")
		w.WriteHeader(200)
		fmt.Fprint(w, "line\n")
		w.(http.Flusher).Flush()
		w.Header().Set("X-End", "done")
	})
	mux.HandleFunc("/post", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %s", b)
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw) // echo until the client closes
	})
	sock, conns, srv := unixServer(t, mux)
	tr := &unixTransport{socket: sock}
	hc := &http.Client{Transport: tr}
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		if body, _, err := get(t, hc, ctx, "/small"); err != nil || body != "hello" {
			t.Fatalf("GET /small = %q, %v", body, err)
		}
	}
	if body, tr, err := get(t, hc, ctx, "/trailer"); err != nil || body != "line\n" || tr.Get("X-End") != "done" {
		t.Fatalf("GET /trailer = %q, trailer %v, %v", body, tr, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("4 sequential requests used %d connections, want 1", n)
	}
	resp, err := hc.Post("http://berth/post", "text/plain", strings.NewReader("data"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "got data" {
		t.Errorf("POST answered %q", b)
	}
	resp.Body.Close()

	// A body closed before its end takes its connection with it.
	resp, err = hc.Get("http://berth/big")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	before := conns.Load()
	if body, _, err := get(t, hc, ctx, "/small"); err != nil || body != "hello" {
		t.Fatalf("GET /small after an early close = %q, %v", body, err)
	}
	if n := conns.Load(); n != before+1 {
		t.Errorf("request after an early close: %d new connections, want 1", n-before)
	}

	// An upgrade takes its connection out of the pool; the transport dials
	// a replacement in the background, so the next request does not.
	want := conns.Load() + 1 // the upgrade reuses the idle connection
	req, _ := http.NewRequest("POST", "http://berth/upgrade", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "test")
	resp, err = hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	rwc := resp.Body.(io.ReadWriteCloser)
	if _, err := rwc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(rwc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("upgraded stream echoed %q, %v", buf, err)
	}
	rwc.Close()
	// The refill is in the pool once its dial returned, which is after
	// the server counted it.
	pooled := func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.idle) > 0
	}
	for i := 0; (conns.Load() < want || !pooled()) && i < 500; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if body, _, err := get(t, hc, ctx, "/small"); err != nil || body != "hello" {
		t.Fatalf("GET after an upgrade = %q, %v", body, err)
	}
	if n := conns.Load(); n != want {
		t.Errorf("upgrade and a request after it: %d connections in all, want %d (the refill only)", n, want)
	}

	// The server closes idle connections (as at its idle timeout): the
	// next requests still succeed, a POST's body included.
	srv.SetKeepAlivesEnabled(false) // closes the idle ones
	time.Sleep(50 * time.Millisecond)
	srv.SetKeepAlivesEnabled(true)
	if body, _, err := get(t, hc, ctx, "/small"); err != nil || body != "hello" {
		t.Fatalf("GET after the server closed the idle connection = %q, %v", body, err)
	}

	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = get(t, hc, cctx, "/block")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled streaming request: %v, want the context's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancelled request returned after %v", d)
	}
	if body, _, err := get(t, hc, ctx, "/small"); err != nil || body != "hello" {
		t.Fatalf("GET after a cancelled request = %q, %v", body, err)
	}
}
