// Command tftpbench measures berth's TFTP server beside tftpd-hpa, dnsmasq
// and atftpd, side by side in one run on loopback, with the same real
// client (atftp) for every server, and prints a Markdown report.
//
// It is run by `make bench-netboot-tftp` inside a fresh network namespace
// (unshare -n), so dnsmasq can have port 69 on 127.0.0.1 to itself and no
// traffic leaves the namespace's loopback. tftpd-hpa and atftpd both ship
// /usr/sbin/in.tftpd, so they are unpacked from their .debs (-peers) rather
// than installed.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berthhq/berth/internal/netboot/tftp"
)

type server struct {
	name string
	port int
	cmd  *exec.Cmd
}

func main() {
	size := flag.Int("size", 100, "size of the test file in MiB")
	rounds := flag.Int("rounds", 3, "rounds per case (servers alternate within a round)")
	peers := flag.String("peers", "", "directory where tftpd-hpa's and atftpd's .debs are unpacked (tftpd-hpa/usr/sbin/in.tftpd, atftpd/usr/sbin/atftpd)")
	concurrent := flag.Int("concurrent", 200, "clients in the concurrency case")
	limit := flag.Duration("limit", 40*time.Second, "longest one download may run; slower ones are cut and rated by the bytes received")
	flag.Parse()
	if err := run(*size, *rounds, *peers, *concurrent, *limit); err != nil {
		fmt.Fprintln(os.Stderr, "tftpbench:", err)
		os.Exit(1)
	}
}

func run(sizeMiB, rounds int, peers string, concurrent int, limit time.Duration) error {
	atftp, err := exec.LookPath("atftp")
	if err != nil {
		return errors.New("the atftp client is missing: apt-get install atftp")
	}
	root, err := os.MkdirTemp("", "tftpbench-root")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	size := int64(sizeMiB) << 20
	if err := randomFile(filepath.Join(root, "big"), size); err != nil {
		return err
	}
	if err := randomFile(filepath.Join(root, "small"), 1<<20); err != nil {
		return err
	}
	outDir, err := os.MkdirTemp("/dev/shm", "tftpbench-out")
	if err != nil {
		outDir, err = os.MkdirTemp("", "tftpbench-out")
		if err != nil {
			return err
		}
	}
	defer os.RemoveAll(outDir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	berth, err := startBerth(ctx, root)
	if err != nil {
		return err
	}
	servers := []*server{berth}
	for _, start := range []func(string, string) (*server, error){startTftpdHPA, startDnsmasq, startAtftpd} {
		s, err := start(peers, root)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tftpbench: peer not measured:", err)
			continue
		}
		defer func() { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait() }()
		servers = append(servers, s)
	}

	fmt.Printf("File: %d MiB, client: atftp (%s), %d rounds, servers alternate within each round; MB/s = 10^6 bytes/s, median of rounds.\n\n", sizeMiB, atftp, rounds)
	type tcase struct {
		opts    []string
		servers []string // nil: all
	}
	cases := []tcase{
		{[]string{"blksize 512"}, nil},
		{[]string{"blksize 1468"}, nil},
		{[]string{"blksize 65464"}, nil},
		{[]string{"blksize 1468", "windowsize 64"}, []string{"berth", "atftpd"}},
		{[]string{"blksize 65464", "windowsize 8"}, []string{"berth", "atftpd"}},
	}
	fmt.Println("| options | " + strings.Join(names(servers), " | ") + " | berth / best peer |")
	fmt.Println("|---" + strings.Repeat("|---:", len(servers)) + "|---:|")
	failed := false
	for _, c := range cases {
		results := map[string][]float64{}
		notes := map[string]string{}
		for r := 0; r < rounds; r++ {
			order := slices.Clone(servers)
			// Rotate who goes first, so no server always gets a warm cache.
			for i := 0; i < r; i++ {
				order = append(order[1:], order[0])
			}
			for _, s := range order {
				if c.servers != nil && !slices.Contains(c.servers, s.name) {
					continue
				}
				mbs, note, err := download(ctx, atftp, s.port, "big", size, c.opts, filepath.Join(outDir, s.name), limit)
				if err != nil {
					notes[s.name] = "failed: " + err.Error()
					if s.name == "berth" {
						failed = true
					}
					continue
				}
				if note != "" {
					notes[s.name] = note
				}
				results[s.name] = append(results[s.name], mbs)
			}
		}
		row := "| " + strings.Join(c.opts, ", ") + " |"
		best := 0.0
		for _, s := range servers {
			v := results[s.name]
			cell := "–"
			if len(v) > 0 {
				m := median(v)
				cell = fmt.Sprintf("%.1f", m)
				if s.name != "berth" && m > best {
					best = m
				}
			}
			if n := notes[s.name]; n != "" {
				cell += " (" + n + ")"
			}
			row += " " + cell + " |"
		}
		ratio := "–"
		if b := results["berth"]; len(b) > 0 && best > 0 {
			ratio = fmt.Sprintf("**%.2f×**", median(b)/best)
		}
		fmt.Println(row + " " + ratio + " |")
	}

	fmt.Printf("\n%d concurrent atftp clients, 1 MiB each, blksize 1468:\n\n", concurrent)
	fmt.Println("| server | completed | wall time |")
	fmt.Println("|---|---:|---:|")
	for _, s := range servers {
		ok, d := swarm(ctx, atftp, s.port, concurrent, filepath.Join(outDir, "swarm-"+s.name))
		fmt.Printf("| %s | %d/%d | %.2f s |\n", s.name, ok, concurrent, d.Seconds())
		if s.name == "berth" && ok != concurrent {
			failed = true
		}
	}
	st := berthStats(berth)
	fmt.Printf("\nberth counters: %d transfers ok, %d failed, %d retransmits.\n", st.TransfersOK, st.TransfersFailed, st.Retransmits)
	if failed {
		return errors.New("a berth transfer failed")
	}
	return nil
}

func names(ss []*server) []string {
	var n []string
	for _, s := range ss {
		n = append(n, s.name)
	}
	return n
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var berthServer *tftp.Server

func berthStats(*server) tftp.Stats { return berthServer.Stats() }

func startBerth(ctx context.Context, root string) (*server, error) {
	s, err := tftp.New(tftp.Config{Root: root, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	berthServer = s
	go s.Serve(ctx, conn)
	return &server{name: "berth", port: conn.LocalAddr().(*net.UDPAddr).Port}, nil
}

func freePort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// startPeerQuiet starts a peer whose log would flood the report.
func startPeerQuiet(name string, port int, args ...string) (*server, error) {
	return startPeerOut(io.Discard, name, port, args...)
}

// startPeer starts a peer server and waits until its port is taken.
func startPeer(name string, port int, args ...string) (*server, error) {
	return startPeerOut(os.Stderr, name, port, args...)
}

func startPeerOut(stderr io.Writer, name string, port int, args ...string) (*server, error) {
	if _, err := os.Stat(args[0]); err != nil {
		return nil, fmt.Errorf("%s: %w (make bench-netboot-tftp unpacks it)", name, err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// Ready when it answers a request for a missing file with an error.
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	defer probe.Close()
	rrq := []byte("\x00\x01no-such-file\x00octet\x00")
	buf := make([]byte, 600)
	for i := 0; i < 50; i++ {
		_, _ = probe.WriteToUDP(rrq, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		_ = probe.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := probe.ReadFromUDP(buf); err == nil && n >= 2 && buf[1] == 5 {
			return &server{name: name, port: port, cmd: cmd}, nil
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, fmt.Errorf("%s did not bind port %d", name, port)
}

func startTftpdHPA(peers, root string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// ":PORT" rather than 127.0.0.1:PORT: tftpd-hpa resolves the address
	// with AI_ADDRCONFIG, which finds nothing in a namespace that has only
	// loopback; there the wildcard is loopback anyway.
	return startPeer("tftpd-hpa", port, filepath.Join(peers, "tftpd-hpa/usr/sbin/in.tftpd"),
		"-l", "-L", "-a", ":"+strconv.Itoa(port), "-u", "root", "-s", root)
}

func startAtftpd(peers, root string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return startPeer("atftpd", port, filepath.Join(peers, "atftpd/usr/sbin/atftpd"),
		"--daemon", "--no-fork", "--port", strconv.Itoa(port), "--bind-address", "127.0.0.1",
		"--user", "root.root", "--logfile", "/dev/null", "--maxthread", "400", root)
}

// startDnsmasq runs dnsmasq's TFTP server, which always listens on port 69.
func startDnsmasq(_, root string) (*server, error) {
	p, err := exec.LookPath("dnsmasq")
	if err != nil {
		return nil, errors.New("dnsmasq: not installed (dnsmasq-base)")
	}
	if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 69}); err != nil {
		return nil, fmt.Errorf("dnsmasq: port 69 is taken or not allowed (%v); run in a network namespace as root", err)
	} else {
		c.Close()
	}
	return startPeerQuiet("dnsmasq", 69, p, "-k", "--conf-file=/dev/null", "--port=0", "--enable-tftp",
		"--tftp-root="+root, "--listen-address=127.0.0.1", "--bind-interfaces", "--user=root",
		"--pid-file=", "--tftp-max=400", "--quiet-tftp", "--log-facility=-")
}

// download runs one atftp download and returns MB/s. A download cut at
// limit is rated by the bytes it received and noted.
func download(ctx context.Context, atftp string, port int, file string, size int64, opts []string, dst string, limit time.Duration) (float64, string, error) {
	_ = os.Remove(dst)
	args := []string{}
	for _, o := range opts {
		args = append(args, "--option", o)
	}
	args = append(args, "-g", "-r", file, "-l", dst, "127.0.0.1", strconv.Itoa(port))
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(cctx, atftp, args...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	fi, serr := os.Stat(dst)
	if cctx.Err() != nil {
		if serr != nil {
			return 0, "", fmt.Errorf("nothing received in %v", limit)
		}
		return float64(fi.Size()) / d.Seconds() / 1e6, fmt.Sprintf("cut at %v", limit), nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	if serr != nil || fi.Size() != size {
		return 0, "", fmt.Errorf("received %d of %d bytes: %s", sizeOf(fi), size, strings.TrimSpace(string(out)))
	}
	return float64(size) / d.Seconds() / 1e6, "", nil
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return 0
	}
	return fi.Size()
}

// swarm starts n atftp clients at once and counts the complete downloads.
func swarm(ctx context.Context, atftp string, port, n int, dir string) (int, time.Duration) {
	_ = os.MkdirAll(dir, 0o755)
	defer os.RemoveAll(dir)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := filepath.Join(dir, strconv.Itoa(i))
			cctx, cancel := context.WithTimeout(ctx, 120*time.Second)
			defer cancel()
			cmd := exec.CommandContext(cctx, atftp, "--option", "blksize 1468", "-g", "-r", "small", "-l", dst, "127.0.0.1", strconv.Itoa(port))
			cmd.SysProcAttr = &syscall.SysProcAttr{}
			if err := cmd.Run(); err != nil {
				return
			}
			if fi, err := os.Stat(dst); err == nil && fi.Size() == 1<<20 {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ok, time.Since(start)
}
