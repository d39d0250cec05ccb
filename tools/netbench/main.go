// Command netbench measures berth's host network handling beside Debian's
// ifupdown2 (unpacked by make deps, never installed), in one run:
//
//   - parse: parse + validate + plan of a 2,000-interface file, beside
//     ifupdown2's `ifquery -a -o json` of the same file (parsing alone);
//   - apply (root): in a network namespace with 200 bridges, a change to
//     one bridge applied live by berth's apply helper, beside `ifreload -a`
//     of the same change. For each, netlink notifications are recorded
//     during the apply, and the links that were not changed by the file
//     are checked: same ifindex, flags, MTU, master and addresses, and no
//     notification at all.
//
// It prints a Markdown table. Exit status 1 means a check failed.
//
// Usage:
//
//	go run ./tools/netbench [-ifaces 2000] [-bridges 200] [-rounds 5] [-ifupdown2 DIR]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/hostnet"
	"github.com/berthhq/berth/internal/ifupdown"
)

func main() {
	if os.Getenv("NETBENCH_HELPER") == "1" {
		if err := hostnet.RunHelper(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	nIfaces := flag.Int("ifaces", 2000, "interfaces in the parse benchmark's file")
	nBridges := flag.Int("bridges", 200, "bridges in the apply benchmark's namespace")
	rounds := flag.Int("rounds", 5, "rounds of each measurement (the median is reported)")
	ifu := flag.String("ifupdown2", "/var/cache/berth-test/unpacked/ifupdown2", "unpacked ifupdown2 (make deps)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "netbench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	peer := newIfupdown2(*ifu, dir)
	ok := benchParse(dir, *nIfaces, *rounds, peer)
	if os.Getuid() == 0 {
		ok = benchApply(dir, *nBridges, *rounds, peer) && ok
	} else {
		fmt.Println("\napply benchmark skipped: needs root for a network namespace")
	}
	if !ok {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "netbench:", err)
	os.Exit(2)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// bigFile writes an interfaces file of n interfaces: NICs, bonds over
// them, VLANs on the bonds, bridges over VLANs and NICs, VLAN interfaces
// with addresses on the bridges.
func bigFile(n int) string {
	var b strings.Builder
	b.WriteString("auto lo\niface lo inet loopback\n\n")
	k := 1 // lo
	nic := 0
	group := 0
	for k < n {
		g := group
		group++
		// 2 NICs, a bond, a VLAN on it, a bridge on the VLAN, a bridge
		// on a third NIC with an address, a VLAN interface on it: 8.
		a, c, d := nic, nic+1, nic+2
		nic += 3
		fmt.Fprintf(&b, "iface ens%d inet manual\n\niface ens%d inet manual\n\niface ens%d inet manual\n\n", a, c, d)
		fmt.Fprintf(&b, "auto bond%d\niface bond%d inet manual\n\tbond-slaves ens%d ens%d\n\tbond-mode 802.3ad\n\tbond-miimon 100\n\tbond-xmit-hash-policy layer3+4\n\n", g, g, a, c)
		vid := 10 + g%4000
		fmt.Fprintf(&b, "iface bond%d.%d inet manual\n\n", g, vid)
		fmt.Fprintf(&b, "auto vmbr%dv%d\niface vmbr%dv%d inet manual\n\tbridge-ports bond%d.%d\n\tbridge-stp off\n\tbridge-fd 0\n\n", g, vid, g, vid, g, vid)
		fmt.Fprintf(&b, "auto vmbr%d\niface vmbr%d inet static\n\taddress 10.%d.%d.1/24\n\tbridge-ports ens%d\n\tbridge-stp off\n\tbridge-fd 0\n\tpost-up echo vmbr%d up\n\n", g, g, g/256, g%256, d, g)
		fmt.Fprintf(&b, "auto vmbr%d.%d\niface vmbr%d.%d inet static\n\taddress 172.%d.%d.1/24\n\n", g, vid, g, vid, 16+g/256%16, g%256)
		k += 8
	}
	return b.String()
}

func benchParse(dir string, n, rounds int, peer *ifupdown2) bool {
	text := bigFile(n)
	path := filepath.Join(dir, "interfaces-big")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		fail(err)
	}
	// The live state berth plans against: the NICs exist, nothing else.
	live := &hostnet.Live{Links: map[string]*hostnet.Link{}, Gateways: map[string]hostnet.Route{}}
	c0, err := ifupdown.Load(ifupdown.OS, path, nil)
	if err != nil {
		fail(err)
	}
	for _, i := range c0.Ifaces {
		if i.Type() == ifupdown.TypePhysical {
			live.Links[i.Name] = &hostnet.Link{Name: i.Name, Type: "device", MTU: 1500, Up: true}
		}
	}
	var berth []time.Duration
	var nActs int
	for r := 0; r < rounds*4; r++ {
		t0 := time.Now()
		c, err := ifupdown.Load(ifupdown.OS, path, nil)
		if err != nil {
			fail(err)
		}
		if err := ifupdown.Validate(c, live.Names()); err != nil {
			fail(err)
		}
		acts, err := hostnet.Plan(c, nil, live)
		if err != nil {
			fail(err)
		}
		berth = append(berth, time.Since(t0))
		nActs = len(acts)
	}
	fmt.Printf("## parse + validate + plan, %d interfaces (%d lines, %d planned actions)\n\n", len(c0.Ifaces), strings.Count(text, "\n"), nActs)
	fmt.Println("| tool | median | ratio |")
	fmt.Println("|---|---|---|")
	bm := median(berth)
	fmt.Printf("| berth: parse + validate + plan | %v | 1.00 |\n", bm.Round(time.Microsecond))
	if peer == nil {
		fmt.Println("| ifupdown2 ifquery | not unpacked (make deps) | - |")
		return true
	}
	var pd []time.Duration
	for r := 0; r < rounds; r++ {
		t0 := time.Now()
		out, err := peer.run(nil, "ifquery", "-a", "-i", path, "-o", "json")
		if err != nil {
			fmt.Printf("| ifupdown2 ifquery -a | failed: %v %s | - |\n", err, firstLine(out))
			return false
		}
		pd = append(pd, time.Since(t0))
	}
	pm := median(pd)
	fmt.Printf("| ifupdown2: ifquery -a -o json (parse only) | %v | %.1fx slower |\n\n", pm.Round(time.Millisecond), float64(pm)/float64(bm))
	return true
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// ifupdown2 runs the unpacked ifupdown2's commands.
type ifupdown2 struct{ dir, py string }

func newIfupdown2(root, work string) *ifupdown2 {
	if _, err := os.Stat(filepath.Join(root, "usr/share/ifupdown2/__main__.py")); err != nil {
		return nil
	}
	d := filepath.Join(work, "ifupdown2")
	pkg := filepath.Join(d, "ifupdown2")
	for _, c := range [][]string{
		{"mkdir", "-p", d},
		{"cp", "-a", filepath.Join(root, "usr/share/ifupdown2"), d},
		{"mkdir", "-p", filepath.Join(pkg, "etc/network")},
		{"cp", "-a", filepath.Join(root, "etc/network/ifupdown2"), filepath.Join(pkg, "etc/network/")},
		{"mkdir", "-p", filepath.Join(d, "bin")},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			fail(fmt.Errorf("%v: %v %s", c, err, out))
		}
	}
	for _, n := range []string{"ifquery", "ifreload", "ifup", "ifdown"} {
		os.Symlink(filepath.Join(pkg, "__main__.py"), filepath.Join(d, "bin", n))
	}
	// ifreload has no -i: point its configuration at the benchmark's file.
	conf := filepath.Join(pkg, "etc/network/ifupdown2/ifupdown2.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		fail(err)
	}
	b = []byte(strings.Replace(string(b), "default_interfaces_configfile=/etc/network/interfaces", "default_interfaces_configfile="+filepath.Join(work, "interfaces"), 1))
	if err := os.WriteFile(conf, b, 0o644); err != nil {
		fail(err)
	}
	return &ifupdown2{dir: d, py: "/usr/bin/python3"}
}

// run runs an ifupdown2 command, inside the namespace when ns is set.
func (p *ifupdown2) run(ns []string, cmd string, args ...string) ([]byte, error) {
	argv := append(append(ns, "env", "PYTHONPATH="+p.dir, p.py, filepath.Join(p.dir, "bin", cmd)), args...)
	c := exec.Command(argv[0], argv[1:]...)
	return c.CombinedOutput()
}

// linkState is what must not change on an untouched link.
type linkState struct {
	Index  int
	Flags  uint32
	MTU    int
	Master int
	Addrs  []string
}

func snapshot(h *netlink.Handle) map[string]linkState {
	ls, err := h.LinkList()
	if err != nil {
		fail(err)
	}
	out := map[string]linkState{}
	for _, l := range ls {
		a := l.Attrs()
		st := linkState{Index: a.Index, Flags: a.RawFlags, MTU: a.MTU, Master: a.MasterIndex}
		addrs, _ := h.AddrList(l, netlink.FAMILY_ALL)
		for _, ad := range addrs {
			st.Addrs = append(st.Addrs, ad.IPNet.String())
		}
		sort.Strings(st.Addrs)
		out[a.Name] = st
	}
	return out
}

// watch records the names of links that get link or address
// notifications until stop is called.
func watch(ns netns.NsHandle, h *netlink.Handle) (stop func() map[string]int) {
	lch := make(chan netlink.LinkUpdate, 4096)
	ach := make(chan netlink.AddrUpdate, 4096)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(lch, done, netlink.LinkSubscribeOptions{Namespace: &ns}); err != nil {
		fail(err)
	}
	if err := netlink.AddrSubscribeWithOptions(ach, done, netlink.AddrSubscribeOptions{Namespace: &ns}); err != nil {
		fail(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	names := map[int]string{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for u := range lch {
			mu.Lock()
			seen[u.Attrs().Name]++
			names[u.Attrs().Index] = u.Attrs().Name
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for u := range ach {
			mu.Lock()
			n := names[u.LinkIndex]
			if n == "" {
				if l, err := h.LinkByIndex(u.LinkIndex); err == nil {
					n = l.Attrs().Name
				}
			}
			seen[n]++
			mu.Unlock()
		}
	}()
	return func() map[string]int {
		time.Sleep(300 * time.Millisecond) // let late notifications arrive
		close(done)
		// The library closes the channels when done is closed and
		// its socket read returns.
		waitc := make(chan struct{})
		go func() { wg.Wait(); close(waitc) }()
		select {
		case <-waitc:
		case <-time.After(2 * time.Second):
		}
		mu.Lock()
		defer mu.Unlock()
		return maps(seen)
	}
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func bridgesFile(n int, changed string) string {
	var b strings.Builder
	b.WriteString("auto lo\niface lo inet loopback\n\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "iface eth%d inet manual\n\n", i)
		addr := fmt.Sprintf("10.%d.%d.1/24", i/256, i%256)
		if i == n/2 && changed != "" {
			addr = changed
		}
		fmt.Fprintf(&b, "auto vmbr%d\niface vmbr%d inet static\n\taddress %s\n\tbridge-ports eth%d\n\tbridge-stp off\n\tbridge-fd 0\n\n", i, i, addr, i)
	}
	return b.String()
}

func benchApply(dir string, n, rounds int, peer *ifupdown2) bool {
	name := fmt.Sprintf("netbench%d", os.Getpid())
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			fail(fmt.Errorf("%v: %v %s", args, err, out))
		}
	}
	run("ip", "netns", "add", name)
	defer exec.Command("ip", "netns", "del", name).Run()
	var batch strings.Builder
	batch.WriteString("link set lo up\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&batch, "link add eth%d type veth peer name peer%d\n", i, i)
	}
	cmd := exec.Command("ip", "-n", name, "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		fail(fmt.Errorf("create NICs: %v %s", err, out))
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		fail(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		fail(err)
	}
	defer h.Close()
	self, _ := os.Executable()
	path := filepath.Join(dir, "interfaces")
	helper := func(cur, prev string) time.Duration {
		req, _ := json.Marshal(hostnet.HelperRequest{Path: path, Cur: []byte(cur), Prev: []byte(prev), Sys: "/sys"})
		c := exec.Command("ip", "netns", "exec", name, self)
		c.Env = append(os.Environ(), "NETBENCH_HELPER=1")
		c.Stdin = bytes.NewReader(req)
		t0 := time.Now()
		out, err := c.CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			fail(fmt.Errorf("apply: %v\n%s", err, out))
		}
		return d
	}
	base := bridgesFile(n, "")
	variants := []string{bridgesFile(n, "192.0.2.1/24"), bridgesFile(n, "198.51.100.1/24")}
	initial := helper(base, "")
	target := fmt.Sprintf("vmbr%d", n/2)

	check := func(tool string, before, after map[string]linkState, seen map[string]int) (bad []string) {
		for ln, b := range before {
			if ln == target {
				continue
			}
			a, ok := after[ln]
			if !ok {
				bad = append(bad, ln+" vanished")
				continue
			}
			if b.Index != a.Index || b.Flags != a.Flags || b.MTU != a.MTU || b.Master != a.Master || !slices.Equal(b.Addrs, a.Addrs) {
				bad = append(bad, fmt.Sprintf("%s changed (%+v → %+v)", ln, b, a))
			}
			if seen[ln] > 0 {
				bad = append(bad, fmt.Sprintf("%s got %d notification(s)", ln, seen[ln]))
			}
		}
		return bad
	}

	// berth: alternate between two addresses on one bridge.
	var bd []time.Duration
	var berthBad []string
	prev := base
	for r := 0; r < rounds; r++ {
		v := variants[r%2]
		before := snapshot(h)
		stop := watch(ns, h)
		bd = append(bd, helper(v, prev))
		seen := stop()
		after := snapshot(h)
		berthBad = append(berthBad, check("berth", before, after, seen)...)
		if got := after[target].Addrs; !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, strings.Split(extractAddr(v, target), "/")[0]) }) {
			berthBad = append(berthBad, fmt.Sprintf("%s lacks its new address: %v", target, got))
		}
		prev = v
	}
	fmt.Printf("## live apply of one bridge's change, %d bridges in a network namespace\n\n", n)
	fmt.Printf("initial apply of %d bridges by berth: %v\n\n", n, initial.Round(time.Millisecond))
	fmt.Println("| tool | median | ratio | untouched links changed or notified |")
	fmt.Println("|---|---|---|---|")
	bm := median(bd)
	fmt.Printf("| berth apply helper | %v | 1.00 | %s |\n", bm.Round(time.Microsecond), verdict(berthBad, 2*n))
	ok := len(berthBad) == 0
	if peer == nil {
		fmt.Println("| ifupdown2 ifreload -a | not unpacked (make deps) | - | - |")
		return ok
	}
	// ifupdown2: the same change with ifreload -a on the file.
	nsCmd := []string{"ip", "netns", "exec", name}
	if err := os.WriteFile(path, []byte(prev), 0o644); err != nil {
		fail(err)
	}
	if out, err := peer.run(nsCmd, "ifreload", "-a"); err != nil {
		fmt.Printf("| ifupdown2 ifreload -a | failed to take over the state: %v %s | - | - |\n", err, firstLine(out))
		return ok
	}
	var pd []time.Duration
	var peerBad []string
	for r := 0; r < rounds; r++ {
		v := variants[(r+1)%2]
		os.WriteFile(path, []byte(v), 0o644)
		before := snapshot(h)
		stop := watch(ns, h)
		t0 := time.Now()
		out, err := peer.run(nsCmd, "ifreload", "-a")
		pd = append(pd, time.Since(t0))
		seen := stop()
		if err != nil {
			fmt.Printf("| ifupdown2 ifreload -a | failed: %v %s | - | - |\n", err, firstLine(out))
			return ok
		}
		peerBad = append(peerBad, check("ifreload", before, snapshot(h), seen)...)
	}
	pm := median(pd)
	fmt.Printf("| ifupdown2 ifreload -a | %v | %.1fx slower | %s |\n\n", pm.Round(time.Millisecond), float64(pm)/float64(bm), verdict(peerBad, 2*n))
	return ok
}

func extractAddr(file, iface string) string {
	c, err := ifupdown.Parse("x", []byte(file))
	if err != nil {
		return ""
	}
	for _, s := range c.Ifaces(iface) {
		for _, o := range s.Options() {
			if o.Key == "address" {
				if p, err := netip.ParsePrefix(o.Value); err == nil {
					return p.String()
				}
			}
		}
	}
	return ""
}

// verdict sums up the findings of all rounds: distinct links whose state
// changed, and distinct links that only got netlink notifications.
func verdict(bad []string, total int) string {
	if len(bad) == 0 {
		return fmt.Sprintf("none of %d", total)
	}
	changed, notified := map[string]bool{}, map[string]bool{}
	var ex []string
	for _, b := range bad {
		name, rest, _ := strings.Cut(b, " ")
		if strings.HasPrefix(rest, "got ") {
			notified[name] = true
		} else {
			changed[name] = true
			if len(ex) < 2 {
				ex = append(ex, b)
			}
		}
	}
	out := fmt.Sprintf("%d of %d changed state, %d got netlink notifications (over all rounds)", len(changed), total, len(notified))
	if len(ex) > 0 {
		out += ": " + strings.Join(ex, "; ")
	}
	return out
}
