// Command dhcpbench measures DHCP DORA (discover, offer, request, ack)
// exchanges per second from distinct MACs against berth's DHCP server and
// dnsmasq, side by side in one run, each serving a bridge inside a
// network namespace this tool creates; the load client runs in a second
// namespace on the same bridge. Nothing leaves those namespaces. Run as
// root: `make bench-netboot-dhcp`.
//
// berth runs its real DHCP server (internal/netboot/dhcp) with its lease
// journal on disk, fsynced before every ACK (group commit); dnsmasq runs
// with --no-ping (berth does not ping before offering either) and a lease
// limit above the client count.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/netboot/dhcp"
)

type result struct {
	Server  string  `json:"server"`
	OK      int     `json:"ok"`
	Failed  int     `json:"failed"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
}

func main() {
	mode := flag.String("mode", "bench", "bench | berth-server | load (internal modes run inside the namespaces)")
	n := flag.Int("n", 2000, "DORA exchanges (distinct MACs)")
	conc := flag.Int("c", 32, "exchanges in flight")
	rounds := flag.Int("rounds", 1, "rounds per server")
	dir := flag.String("dir", "", "state directory (berth-server)")
	iface := flag.String("iface", "br0", "interface")
	seed := flag.Int("seed", 1, "MAC seed (load)")
	flag.Parse()
	var err error
	switch *mode {
	case "bench":
		err = bench(*n, *conc, *rounds)
	case "berth-server":
		err = berthServer(*dir, *iface)
	case "load":
		var r result
		r, err = load(*iface, *n, *conc, *seed)
		if err == nil {
			json.NewEncoder(os.Stdout).Encode(r)
		}
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dhcpbench:", err)
		os.Exit(1)
	}
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %w: %s", args, err, out)
	}
	return nil
}

// topo creates namespace srv (bridge br0, 10.79.0.1/16) and namespace
// cli with eth0 on the bridge.
func topo(tag string) (srv, cli string, cleanup func(), err error) {
	srv, cli = "dhcpbench-srv-"+tag, "dhcpbench-cli-"+tag
	cleanup = func() {
		exec.Command("ip", "netns", "delete", srv).Run()
		exec.Command("ip", "netns", "delete", cli).Run()
	}
	cleanup()
	for _, c := range [][]string{
		{"ip", "netns", "add", srv}, {"ip", "netns", "add", cli},
		{"ip", "-n", srv, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", srv, "addr", "add", "10.79.0.1/16", "dev", "br0"},
		{"ip", "-n", srv, "link", "set", "br0", "up"},
		{"ip", "-n", srv, "link", "add", "p0", "type", "veth", "peer", "name", "eth0", "netns", cli},
		{"ip", "-n", srv, "link", "set", "p0", "master", "br0", "up"},
		{"ip", "-n", cli, "link", "set", "eth0", "up"},
		{"ip", "-n", cli, "link", "set", "lo", "up"},
	} {
		if err := sh(c...); err != nil {
			cleanup()
			return "", "", nil, err
		}
	}
	return srv, cli, cleanup, nil
}

func bench(n, conc, rounds int) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark creates network namespaces")
	}
	self, _ := os.Executable()
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		return errors.New("dnsmasq is not installed (apt-get install dnsmasq-base)")
	}
	servers := []struct {
		name  string
		start func(ns, dir string) *exec.Cmd
	}{
		{"berth", func(ns, dir string) *exec.Cmd {
			return exec.Command("ip", "netns", "exec", ns, self, "-mode", "berth-server", "-dir", dir, "-iface", "br0")
		}},
		{"dnsmasq", func(ns, dir string) *exec.Cmd {
			return exec.Command("ip", "netns", "exec", ns, dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
				"--interface=br0", "--bind-interfaces", "--dhcp-range=10.79.1.0,10.79.40.255,1h", "--dhcp-lease-max=100000",
				"--dhcp-authoritative", "--no-ping", "--quiet-dhcp", "--dhcp-leasefile="+filepath.Join(dir, "leases"),
				"--pid-file=", "--user=root", "--log-facility=-")
		}},
	}
	res := map[string][]result{}
	for round := 0; round < rounds; round++ {
		for _, s := range servers {
			r, err := func() (result, error) {
				srv, cli, cleanup, err := topo(fmt.Sprint(os.Getpid()))
				if err != nil {
					return result{}, err
				}
				defer cleanup()
				dir, _ := os.MkdirTemp("", "dhcpbench-")
				defer os.RemoveAll(dir)
				cmd := s.start(srv, dir)
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					return result{}, err
				}
				defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
				time.Sleep(700 * time.Millisecond)
				out, err := exec.Command("ip", "netns", "exec", cli, self, "-mode", "load", "-iface", "eth0",
					"-n", fmt.Sprint(n), "-c", fmt.Sprint(conc), "-seed", fmt.Sprint(round+1)).Output()
				if err != nil {
					return result{}, fmt.Errorf("load against %s: %w", s.name, err)
				}
				var r result
				err = json.Unmarshal(out, &r)
				r.Server = s.name
				return r, err
			}()
			if err != nil {
				return err
			}
			fmt.Printf("%-8s round %d: %d DORA ok, %d failed, %.2f s, %.0f DORA/s\n", r.Server, round+1, r.OK, r.Failed, r.Seconds, r.Rate)
			res[s.name] = append(res[s.name], r)
		}
	}
	best := func(rs []result) result {
		b := rs[0]
		for _, r := range rs {
			if r.Rate > b.Rate {
				b = r
			}
		}
		return b
	}
	b, d := best(res["berth"]), best(res["dnsmasq"])
	fmt.Printf("\n| server | DORA/s (best of %d) | failed | ratio berth/dnsmasq |\n|---|---|---|---|\n", rounds)
	fmt.Printf("| berth | %.0f | %d | %.2f× |\n| dnsmasq | %.0f | %d | |\n", b.Rate, b.Failed, b.Rate/d.Rate, d.Rate, d.Failed)
	return nil
}

// berthServer runs berth's DHCP server on iface with a pool covering the
// benchmark's clients and the lease journal in dir.
func berthServer(dir, iface string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	leases, err := dhcp.OpenLeases(filepath.Join(dir, "leases.journal"), nil)
	if err != nil {
		return err
	}
	defer leases.Close()
	s, err := dhcp.New(dhcp.Config{Leases: leases, Log: slog.New(slog.DiscardHandler), Scopes: []dhcp.Scope{{
		Interface: iface, ServerIP: netip.MustParseAddr("10.79.0.1"), Subnet: netip.MustParsePrefix("10.79.0.0/16"),
		Ranges: []dhcp.Range{{Start: netip.MustParseAddr("10.79.1.0"), End: netip.MustParseAddr("10.79.40.255")}}, LeaseTime: time.Hour}}})
	if err != nil {
		return err
	}
	return s.Serve(ctx, nil)
}

// load runs n DORA exchanges, conc at a time, from distinct MACs.
func load(iface string, n, conc, seed int) (result, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20),
				unix.BindToDevice(int(fd), iface))
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
	if err != nil {
		return result{}, err
	}
	conn := pc.(*net.UDPConn)
	defer conn.Close()
	var mu sync.Mutex
	waiting := map[uint32]chan *dhcp.Message{}
	go func() {
		buf := make([]byte, 2048)
		for {
			k, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			m, err := dhcp.Parse(buf[:k])
			if err != nil || m.Op != dhcp.OpReply {
				continue
			}
			mu.Lock()
			ch := waiting[m.XID]
			mu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
		}
	}()
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	exchange := func(xid uint32, req *dhcp.Message, want byte) *dhcp.Message {
		ch := make(chan *dhcp.Message, 4)
		mu.Lock()
		waiting[xid] = ch
		mu.Unlock()
		defer func() { mu.Lock(); delete(waiting, xid); mu.Unlock() }()
		b := req.Marshal()
		for try := 0; try < 4; try++ {
			conn.WriteToUDP(b, dst)
			t := time.NewTimer(time.Second)
			for {
				select {
				case m := <-ch:
					if m.Type() == want {
						t.Stop()
						return m
					}
					continue
				case <-t.C:
				}
				break
			}
		}
		return nil
	}
	var ok, failed atomic.Int64
	var next atomic.Int64
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	base := rng.Uint32()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				mac := net.HardwareAddr{0x02, byte(seed), byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
				xid := base + uint32(i)*2
				msg := func(t byte) *dhcp.Message {
					m := &dhcp.Message{Op: dhcp.OpRequest, HType: 1, HLen: 6, XID: xid, Flags: 0x8000, Cookie: true,
						CIAddr: netip.IPv4Unspecified(), YIAddr: netip.IPv4Unspecified(), SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified()}
					copy(m.CHAddr[:], mac)
					m.Set(dhcp.OptMessageType, []byte{t})
					return m
				}
				off := exchange(xid, msg(dhcp.Discover), dhcp.Offer)
				if off == nil {
					failed.Add(1)
					continue
				}
				req := msg(dhcp.Request)
				req.SetAddr(dhcp.OptRequestedIP, off.YIAddr)
				if id, has := off.Addr(dhcp.OptServerID); has {
					req.SetAddr(dhcp.OptServerID, id)
				}
				if ack := exchange(xid, req, dhcp.Ack); ack == nil || ack.YIAddr != off.YIAddr {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	return result{OK: int(ok.Load()), Failed: int(failed.Load()), Seconds: secs, Rate: float64(ok.Load()) / secs}, nil
}
