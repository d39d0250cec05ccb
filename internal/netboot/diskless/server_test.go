package diskless

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func startServer(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return s, ln.Addr().String()
}

func needQemuIO(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("qemu-io")
	if err != nil {
		if os.Getenv("BERTH_TEST_ROOT") == "1" {
			t.Fatal("qemu-io not found: make deps installs qemu-utils")
		}
		t.Skip("qemu-io not found: install qemu-utils")
	}
	return p
}

// qio runs qemu-io commands against a client's export.
func qio(t *testing.T, bin, addr, export string, cmds ...string) (string, error) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, fmt.Sprintf("nbd://%s/%s", addr, export))
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err == nil && (strings.Contains(string(out), "failed") || strings.Contains(string(out), "error")) {
		err = fmt.Errorf("qemu-io reported a failure")
	}
	return string(out), err
}

// TestTwoClientsQemuIO drives the NBD server with QEMU's NBD client: two
// clients on one image each see only their own writes, and a client's
// writes survive its reconnection and a server restart.
func TestTwoClientsQemuIO(t *testing.T) {
	bin := needQemuIO(t)
	base, _ := makeBase(t, 8<<20)
	clients := filepath.Join(t.TempDir(), "clients")
	images := func(mac net.HardwareAddr) (string, bool) { return base, mac[0] == 0x52 }
	srv, addr := startServer(t, Config{ClientsDir: clients, Image: images})
	const a, b = "52-54-00-00-00-0a", "52-54-00-00-00-0b"

	if out, err := qio(t, bin, addr, a, "write -P 0xab 4096 65536", "write -P 0xcd 1000 10", "flush"); err != nil {
		t.Fatalf("write on A: %v\n%s", err, out)
	}
	if out, err := qio(t, bin, addr, a, "read -P 0xab 4096 65536", "read -P 0xcd 1000 10"); err != nil {
		t.Fatalf("A does not read its writes back: %v\n%s", err, out)
	}
	if out, err := qio(t, bin, addr, b, "read -P 0xab 4096 65536"); err == nil {
		t.Fatalf("B sees A's write:\n%s", out)
	}
	if out, err := qio(t, bin, addr, b, "write -P 0x11 4096 4096", "flush"); err != nil {
		t.Fatalf("write on B: %v\n%s", err, out)
	}
	if out, err := qio(t, bin, addr, a, "read -P 0xab 4096 65536"); err != nil {
		t.Fatalf("B's write reached A: %v\n%s", err, out)
	}
	// The base image is untouched.
	if out, err := exec.Command(bin, "-f", "raw", "-r", "-c", "read -P 0xab 4096 65536", base).CombinedOutput(); err == nil && !strings.Contains(string(out), "failed") {
		t.Fatalf("the base image holds A's write:\n%s", out)
	}
	// Unknown clients are refused.
	if out, err := qio(t, bin, addr, "00-11-22-33-44-55", "read 0 512"); err == nil {
		t.Fatalf("a client without a root was served:\n%s", out)
	}
	if out, err := qio(t, bin, addr, "not-a-mac", "read 0 512"); err == nil {
		t.Fatalf("a bad export name was served:\n%s", out)
	}
	st := srv.Stats()
	if st.Exports != 5 || st.Refused != 2 || st.BytesWritten != 65536+512+4096 || st.Flushes < 2 {
		t.Errorf("stats = %+v", st)
	}
	// qemu-io aligns the 10-byte write to a 512-byte sector (hence 512
	// above); 64 KiB at 4096 fill 16 chunks, the sector at 1000 one more.
	if w, err := srv.Written(mustMAC(a)); err != nil || w != 17*4096 {
		t.Errorf("A wrote %d bytes of chunks (%v), want %d", w, err, 17*4096)
	}

	// A new server on the same directory (a daemon restart) still has A's
	// writes.
	_, addr2 := startServer(t, Config{ClientsDir: clients, Image: images})
	if out, err := qio(t, bin, addr2, a, "read -P 0xab 4096 65536"); err != nil {
		t.Fatalf("A's writes lost across a server restart: %v\n%s", err, out)
	}
	// Reset returns A to the image.
	if err := srv.Reset(mustMAC(a)); err != nil {
		t.Fatal(err)
	}
	if out, err := qio(t, bin, addr2, a, "read -P 0xab 4096 65536"); err == nil {
		t.Fatalf("A still sees its writes after a reset:\n%s", out)
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := parseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}
