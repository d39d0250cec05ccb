package hostnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestMain doubles as the apply helper: the netns tests run this test
// binary under "ip netns exec" exactly as the daemon runs "berth
// hostnet-helper", so the tests go through the real helper path.
func TestMain(m *testing.M) {
	if os.Getenv("BERTH_HOSTNET_HELPER") == "1" {
		if err := RunHelper(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Getenv("BERTH_TEST_ROOT") != "1" {
		t.Skip("needs root and network namespaces: set BERTH_TEST_ROOT=1 (make test does as root)")
	}
}

// testNS is a network namespace the test creates and removes.
type testNS struct {
	t    testing.TB
	Name string
	H    *netlink.Handle
}

func newNS(t testing.TB) *testNS {
	t.Helper()
	needRoot(t)
	b := make([]byte, 4)
	rand.Read(b)
	name := "bhn-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	n := &testNS{t: t, Name: name, H: h}
	n.ip("link", "set", "lo", "up")
	return n
}

// ip runs ip(8) inside the namespace.
func (n *testNS) ip(args ...string) string {
	n.t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nic makes a stand-in for a physical NIC: one end of a veth pair.
func (n *testNS) nic(names ...string) {
	for _, name := range names {
		n.ip("link", "add", name, "type", "veth", "peer", "name", name+"p")
	}
}

// apply runs the helper in the namespace; it returns the output and error.
func (n *testNS) apply(dir string, cur, prev string, dry bool) (string, error) {
	n.t.Helper()
	path := filepath.Join(dir, "interfaces")
	req := HelperRequest{Path: path, Cur: []byte(cur), Sys: "/sys", DryRun: dry}
	if prev != "" {
		req.Prev = []byte(prev)
	}
	body, _ := json.Marshal(req)
	cmd := exec.Command("ip", "netns", "exec", n.Name, os.Args[0])
	cmd.Env = append(os.Environ(), "BERTH_HOSTNET_HELPER=1")
	cmd.Stdin = bytes.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (n *testNS) mustApply(dir, cur, prev string) string {
	n.t.Helper()
	out, err := n.apply(dir, cur, prev, false)
	if err != nil {
		n.t.Fatalf("apply: %v\n%s", err, out)
	}
	// Applying the same file again must find nothing to do.
	again, err := n.apply(dir, cur, cur, true)
	if err != nil || !strings.Contains(again, "nothing to change") {
		n.t.Fatalf("second apply is not a no-op (%v):\n%s", err, again)
	}
	return out
}

func (n *testNS) live() *Live {
	n.t.Helper()
	l, err := ReadLive(n.H, "/nonexistent")
	if err != nil {
		n.t.Fatal(err)
	}
	return l
}

// sysfs reads a bridge attribute the way ip -d shows it.
func (n *testNS) bridgeAttr(br, attr string) string {
	n.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.Name, "cat", "/sys/class/net/"+br+"/bridge/"+attr).CombinedOutput()
	if err != nil {
		n.t.Fatalf("read %s %s: %v %s", br, attr, err, out)
	}
	return strings.TrimSpace(string(out))
}

func readSeed(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "ifupdown", "testdata", "seeds", name+".interfaces"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestApplyBridgeNetns applies the default bridged setup in a namespace,
// then changes it while a guest port sits on the bridge, then removes a
// bridge, checking the live state after each step with netlink and sysfs.
func TestApplyBridgeNetns(t *testing.T) {
	n := newNS(t)
	dir := t.TempDir()
	n.nic("eno1", "eno2")
	v1 := readSeed(t, "bridged")
	n.mustApply(dir, v1, "")

	l := n.live()
	br := l.Links["vmbr0"]
	if br == nil || br.Type != "bridge" || !br.Up {
		t.Fatalf("vmbr0 = %+v", br)
	}
	if l.Links["eno1"].Master != "vmbr0" {
		t.Errorf("eno1 master = %q", l.Links["eno1"].Master)
	}
	if fmt.Sprint(br.Addrs) != "[192.168.10.2/24]" && !strings.Contains(fmt.Sprint(br.Addrs), "192.168.10.2/24") {
		t.Errorf("vmbr0 addresses = %v", br.Addrs)
	}
	if g := l.Gateways["inet"]; g.Gateway.String() != "192.168.10.1" || g.Dev != "vmbr0" {
		t.Errorf("default route = %+v", g)
	}
	if s, fd := n.bridgeAttr("vmbr0", "stp_state"), n.bridgeAttr("vmbr0", "forward_delay"); s != "0" || fd != "0" {
		t.Errorf("stp_state=%s forward_delay=%s, want 0 0", s, fd)
	}

	// A guest port joins the bridge behind berth's back.
	n.ip("link", "add", "tap101i0", "type", "veth", "peer", "name", "guest101")
	n.ip("link", "set", "tap101i0", "master", "vmbr0", "up")
	idx := br.Index

	v2 := strings.Replace(v1, "192.168.10.2/24", "192.168.20.2/24", 1)
	v2 = strings.Replace(v2, "gateway 192.168.10.1", "gateway 192.168.20.1", 1)
	v2 = strings.Replace(v2, "bridge-fd 0", "bridge-fd 0\n    mtu 1400", 1)
	v2 += "\niface eno2 inet manual\n\tmtu 1400\n\nauto vmbr1\niface vmbr1 inet static\n\taddress 10.1.0.1/24\n\tbridge-ports eno2\n\tbridge-stp on\n\tbridge-fd 4\n\tpost-up echo hook-ran-$IFACE-$MODE\n"
	out := n.mustApply(dir, v2, v1)
	if !strings.Contains(out, "hook-ran-vmbr1-start") {
		t.Errorf("post-up hook did not run:\n%s", out)
	}
	l = n.live()
	if l.Links["vmbr0"].Index != idx {
		t.Errorf("vmbr0 was recreated (ifindex %d → %d)", idx, l.Links["vmbr0"].Index)
	}
	if l.Links["tap101i0"].Master != "vmbr0" {
		t.Errorf("guest port left the bridge: master %q", l.Links["tap101i0"].Master)
	}
	if got := fmt.Sprint(l.Links["vmbr0"].Addrs); strings.Contains(got, "192.168.10.2") || !strings.Contains(got, "192.168.20.2/24") {
		t.Errorf("vmbr0 addresses = %s", got)
	}
	if g := l.Gateways["inet"]; g.Gateway.String() != "192.168.20.1" {
		t.Errorf("default route = %+v", g)
	}
	if l.Links["vmbr1"] == nil || l.Links["eno2"].Master != "vmbr1" || l.Links["eno2"].MTU != 1400 {
		t.Errorf("vmbr1 = %+v eno2 = %+v", l.Links["vmbr1"], l.Links["eno2"])
	}
	if s, fd := n.bridgeAttr("vmbr1", "stp_state"), n.bridgeAttr("vmbr1", "forward_delay"); s == "0" || fd != "400" {
		t.Errorf("vmbr1 stp_state=%s forward_delay=%s, want STP on and 400", s, fd)
	}

	// Back to v1: vmbr1 goes, eno2 is released, vmbr0 keeps its guest.
	out = n.mustApply(dir, v1, v2)
	l = n.live()
	if l.Links["vmbr1"] != nil {
		t.Errorf("vmbr1 still exists:\n%s", out)
	}
	if l.Links["tap101i0"].Master != "vmbr0" || l.Links["vmbr0"].Index != idx {
		t.Errorf("guest port or bridge disturbed")
	}

	// Removing a bridge guests sit on is refused before any change.
	v3 := "auto lo\niface lo inet loopback\n"
	out, err := n.apply(dir, v3, v1, false)
	if err == nil || !strings.Contains(out, "guest ports tap101i0 still sit on it") {
		t.Fatalf("removing vmbr0 with a guest: err=%v\n%s", err, out)
	}
	if n.live().Links["vmbr0"] == nil {
		t.Fatal("vmbr0 was removed")
	}
}

// TestApplySeedsNetns applies the seed setups this kernel can run (bridges,
// routing, NAT hooks); bonds and VLANs run in the UML test.
func TestApplySeedsNetns(t *testing.T) {
	for _, seed := range []string{"bridged", "routed", "nat"} {
		t.Run(seed, func(t *testing.T) {
			n := newNS(t)
			n.nic("eno0", "eno1")
			cfg := readSeed(t, seed)
			n.mustApply(t.TempDir(), cfg, "")
			l := n.live()
			if l.Links["vmbr0"] == nil || l.Links["vmbr0"].Type != "bridge" {
				t.Fatalf("no vmbr0 after applying %s", seed)
			}
			if seed == "nat" {
				out, _ := exec.Command("ip", "netns", "exec", n.Name, "cat", "/proc/sys/net/ipv4/ip_forward").CombinedOutput()
				if strings.TrimSpace(string(out)) != "1" {
					t.Errorf("post-up did not enable forwarding in the namespace: %q", out)
				}
			}
		})
	}
}

// TestApplyMissingNIC fails cleanly when the file names a NIC the host
// lacks.
func TestApplyMissingNIC(t *testing.T) {
	n := newNS(t)
	out, err := n.apply(t.TempDir(), "auto eno7\niface eno7 inet static\n\taddress 10.0.0.1/24\n", "", false)
	if err == nil || !strings.Contains(out, "eno7 does not exist on this host") {
		t.Fatalf("err=%v\n%s", err, out)
	}
}

// TestApplyMACLearningNetns: bridge-disable-mac-learning turns learning
// off on the bridge's ports.
func TestApplyMACLearningNetns(t *testing.T) {
	n := newNS(t)
	n.nic("eno1")
	cfg := "auto vmbr0\niface vmbr0 inet manual\n\tbridge-ports eno1\n\tbridge-stp off\n\tbridge-fd 0\n\tbridge-disable-mac-learning 1\n"
	n.mustApply(t.TempDir(), cfg, "")
	out, err := exec.Command("bridge", "-n", n.Name, "-d", "link", "show", "dev", "eno1").CombinedOutput()
	if err != nil {
		t.Fatalf("bridge link: %v %s", err, out)
	}
	if !strings.Contains(string(out), "learning off") {
		t.Errorf("MAC learning still on:\n%s", out)
	}
}
