package hostnet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berthhq/berth/internal/umltest"
)

// ipLink is the part of `ip -j -d link show` the UML test checks.
type ipLink struct {
	Name     string `json:"ifname"`
	Index    int    `json:"ifindex"`
	Master   string `json:"master"`
	Link     string `json:"link"`
	MTU      int    `json:"mtu"`
	LinkInfo struct {
		Kind string         `json:"info_kind"`
		Data map[string]any `json:"info_data"`
	} `json:"linkinfo"`
}

type ipAddr struct {
	Name  string `json:"ifname"`
	Addrs []struct {
		Local string `json:"local"`
		Len   int    `json:"prefixlen"`
	} `json:"addr_info"`
}

type bridgeVlan struct {
	Name  string `json:"ifname"`
	Vlans []struct {
		Vlan    int `json:"vlan"`
		VlanEnd int `json:"vlanEnd"`
	} `json:"vlans"`
}

// umlStep is one apply inside the guest and what it printed.
type umlStep struct {
	name, cur, prev string
	out             map[string]string // section → text
}

func (s *umlStep) links(t *testing.T) map[string]ipLink {
	t.Helper()
	var ls []ipLink
	if err := json.Unmarshal([]byte(s.out["LINKS"]), &ls); err != nil {
		t.Fatalf("%s: ip link JSON: %v\n%s", s.name, err, s.out["LINKS"])
	}
	m := map[string]ipLink{}
	for _, l := range ls {
		m[l.Name] = l
	}
	return m
}

func (s *umlStep) addrs(t *testing.T) map[string][]string {
	t.Helper()
	var as []ipAddr
	if err := json.Unmarshal([]byte(s.out["ADDRS"]), &as); err != nil {
		t.Fatalf("%s: ip addr JSON: %v", s.name, err)
	}
	m := map[string][]string{}
	for _, a := range as {
		for _, ai := range a.Addrs {
			if strings.HasPrefix(ai.Local, "fe80:") {
				continue // the kernel's own link-local addresses
			}
			m[a.Name] = append(m[a.Name], fmt.Sprintf("%s/%d", ai.Local, ai.Len))
		}
	}
	return m
}

func (s *umlStep) vlans(t *testing.T) map[string][]string {
	t.Helper()
	var vs []bridgeVlan
	if strings.TrimSpace(s.out["VLANS"]) != "" {
		if err := json.Unmarshal([]byte(s.out["VLANS"]), &vs); err != nil {
			t.Fatalf("%s: bridge vlan JSON: %v\n%s", s.name, err, s.out["VLANS"])
		}
	}
	m := map[string][]string{}
	for _, v := range vs {
		for _, r := range v.Vlans {
			if r.VlanEnd != 0 {
				m[v.Name] = append(m[v.Name], fmt.Sprintf("%d-%d", r.Vlan, r.VlanEnd))
			} else {
				m[v.Name] = append(m[v.Name], fmt.Sprint(r.Vlan))
			}
		}
	}
	return m
}

// buildHelper builds the apply helper statically for the guest: the same
// hostnet.RunHelper that `berth hostnet-helper` runs.
func buildHelper(t *testing.T, dir string) string {
	t.Helper()
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(dir, "hostnethelper")
	cmd := exec.Command("go", "build", "-o", bin, "./internal/hostnet/hostnethelper")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the helper: %v\n%s", err, out)
	}
	return bin
}

// TestApplyBondsVLANsUML applies the bond and VLAN setups of the seed, one
// after the other (each step changes the live state left by the previous
// one), with berth's real apply helper inside a User Mode Linux guest whose
// kernel has bonding, 8021q and VLAN-filtering bridges; the host kernel
// has none of these. After each step the same apply must be a no-op, and
// the guest's state (ip -j, bridge -j) must match the file.
func TestApplyBondsVLANsUML(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("linux"); err != nil {
		t.Fatal("the UML kernel is missing: deps/hostnet.debs lists user-mode-linux; run make deps")
	}
	dir := t.TempDir()
	bin := buildHelper(t, dir)

	bondFixed := readSeed(t, "bond-fixed-ip")
	steps := []*umlStep{
		{name: "bond-fixed-ip", cur: bondFixed},
		{name: "bond-mode-change", cur: strings.Replace(bondFixed, "bond-mode 802.3ad", "bond-mode active-backup", 1)},
		{name: "bond-bridge-port", cur: readSeed(t, "bond-bridge-port")},
		{name: "vlan-bond-traditional", cur: readSeed(t, "vlan-bond-traditional")},
		{name: "vlan-traditional", cur: readSeed(t, "vlan-traditional")},
		{name: "vlan-aware", cur: readSeed(t, "vlan-aware")},
	}
	var script strings.Builder
	script.WriteString("ip link set lo up\nfor n in eno1 eno2 eno3; do ip link add $n type dummy; done\n")
	for k, s := range steps {
		if k > 0 {
			s.prev = steps[k-1].cur
		}
		for _, dry := range []bool{false, true} {
			req := HelperRequest{Path: filepath.Join(dir, "interfaces"), Cur: []byte(s.cur), Sys: "/sys", DryRun: dry}
			if dry {
				req.Prev = []byte(s.cur)
			} else if s.prev != "" {
				req.Prev = []byte(s.prev)
			}
			b, _ := json.Marshal(req)
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d-%v.json", k, dry)), b, 0o644)
		}
		fmt.Fprintf(&script, `echo "=== STEP %[1]s"
echo "=== APPLY"; %[2]s < %[3]s/%[4]d-false.json; echo "apply exit $?"
echo "=== DRY"; %[2]s < %[3]s/%[4]d-true.json; echo "dry exit $?"
echo "=== LINKS"; ip -j -d link show
echo "=== ADDRS"; ip -j addr show
echo "=== VLANS"; bridge -j vlan show
echo "=== ROUTES"; ip -j route show default
echo "=== BONDING"; cat /proc/net/bonding/* 2>/dev/null
echo "=== END"
`, s.name, bin, dir, k)
	}
	res, err := umltest.Run(context.Background(), umltest.Options{
		Dir:     dir,
		Modules: []string{"bonding max_bonds=0", "8021q", "dummy", "bridge"},
		Script:  script.String(),
		Mem:     "384M",
	})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(res.Output, "=== STEP ")[1:]
	if len(parts) != len(steps) {
		t.Fatalf("%d steps ran, want %d; output:\n%s", len(parts), len(steps), res.Output)
	}
	for k, p := range parts {
		s := steps[k]
		s.out = map[string]string{}
		secs := strings.Split(p, "\n=== ")
		if strings.TrimSpace(secs[0]) != s.name {
			t.Fatalf("step %d is %q, want %q", k, secs[0], s.name)
		}
		for _, sec := range secs[1:] {
			name, body, _ := strings.Cut(sec, "\n")
			s.out[strings.TrimSpace(name)] = body
		}
		if !strings.Contains(s.out["APPLY"], "apply exit 0") {
			t.Fatalf("%s: apply failed:\n%s", s.name, s.out["APPLY"])
		}
		if !strings.Contains(s.out["DRY"], "nothing to change") {
			t.Errorf("%s: applying again is not a no-op:\n%s", s.name, s.out["DRY"])
		}
		t.Logf("%s:\n%s", s.name, s.out["APPLY"])
	}

	// 1. Bond with fixed IP: 802.3ad over eno1+eno2, address on bond0,
	// vmbr0 on eno3 with the gateway.
	l, a := steps[0].links(t), steps[0].addrs(t)
	bond := l["bond0"]
	if bond.LinkInfo.Kind != "bond" || bond.LinkInfo.Data["mode"] != "802.3ad" || bond.LinkInfo.Data["miimon"] != float64(100) || bond.LinkInfo.Data["xmit_hash_policy"] != "layer2+3" {
		t.Errorf("bond0 = %+v", bond.LinkInfo)
	}
	if l["eno1"].Master != "bond0" || l["eno2"].Master != "bond0" || l["eno3"].Master != "vmbr0" {
		t.Errorf("masters: eno1=%q eno2=%q eno3=%q", l["eno1"].Master, l["eno2"].Master, l["eno3"].Master)
	}
	if !slices.Contains(a["bond0"], "192.168.1.2/24") || !slices.Contains(a["vmbr0"], "10.10.10.2/24") {
		t.Errorf("addresses %v", a)
	}
	if !strings.Contains(steps[0].out["ROUTES"], `"gateway":"10.10.10.1"`) {
		t.Errorf("default route: %s", steps[0].out["ROUTES"])
	}
	bondIndex := bond.Index

	// 2. The mode changes on the same bond, slaves kept.
	l = steps[1].links(t)
	if l["bond0"].Index != bondIndex || l["bond0"].LinkInfo.Data["mode"] != "active-backup" {
		t.Errorf("bond0 after mode change: index %d (was %d) %+v", l["bond0"].Index, bondIndex, l["bond0"].LinkInfo.Data)
	}
	if l["eno1"].Master != "bond0" || l["eno2"].Master != "bond0" {
		t.Errorf("slaves lost in the mode change")
	}
	if !strings.Contains(steps[1].out["BONDING"], "fault-tolerance (active-backup)") {
		t.Errorf("/proc/net/bonding: %s", steps[1].out["BONDING"])
	}

	// 3. Bond as bridge port: eno3 leaves vmbr0, bond0 joins, its address
	// moves to the bridge.
	l, a = steps[2].links(t), steps[2].addrs(t)
	if l["bond0"].Master != "vmbr0" || l["eno3"].Master != "" {
		t.Errorf("bond0 master %q, eno3 master %q", l["bond0"].Master, l["eno3"].Master)
	}
	if len(a["bond0"]) != 0 || !slices.Contains(a["vmbr0"], "10.10.10.2/24") {
		t.Errorf("addresses %v", a)
	}

	// 4. Traditional VLAN bridge over the bond.
	l, a = steps[3].links(t), steps[3].addrs(t)
	if v := l["bond0.5"]; v.LinkInfo.Kind != "vlan" || v.LinkInfo.Data["id"] != float64(5) || v.Link != "bond0" || v.Master != "vmbr0v5" {
		t.Errorf("bond0.5 = %+v", v)
	}
	if !slices.Contains(a["vmbr0v5"], "10.10.10.2/24") || len(a["vmbr0"]) != 0 {
		t.Errorf("addresses %v", a)
	}

	// 5. Traditional VLAN bridge on a NIC: the bond is gone, eno1 is a
	// bridge port, eno1.5 carries vmbr0v5.
	l = steps[4].links(t)
	if _, ok := l["bond0"]; ok {
		t.Error("bond0 still exists")
	}
	if _, ok := l["bond0.5"]; ok {
		t.Error("bond0.5 still exists")
	}
	if l["eno1"].Master != "vmbr0" || l["eno1.5"].Link != "eno1" || l["eno1.5"].Master != "vmbr0v5" {
		t.Errorf("eno1 master %q, eno1.5 %+v", l["eno1"].Master, l["eno1.5"])
	}

	// 6. VLAN-aware bridge with the management address on vmbr0.5.
	l, a = steps[5].links(t), steps[5].addrs(t)
	if l["vmbr0"].LinkInfo.Data["vlan_filtering"] != float64(1) {
		t.Errorf("vmbr0 not VLAN-aware: %+v", l["vmbr0"].LinkInfo.Data["vlan_filtering"])
	}
	if v := l["vmbr0.5"]; v.LinkInfo.Kind != "vlan" || v.Link != "vmbr0" || v.LinkInfo.Data["id"] != float64(5) {
		t.Errorf("vmbr0.5 = %+v", v)
	}
	if _, ok := l["vmbr0v5"]; ok {
		t.Error("vmbr0v5 still exists")
	}
	if !slices.Contains(a["vmbr0.5"], "10.10.10.2/24") {
		t.Errorf("addresses %v", a)
	}
	v := steps[5].vlans(t)
	// bridge -j lists VLANs one by one or as ranges, depending on version.
	if !(slices.Contains(v["eno1"], "2-4094") || slices.Contains(v["eno1"], "2") && slices.Contains(v["eno1"], "4094") && len(v["eno1"]) == 4094) || !slices.Contains(v["vmbr0"], "5") {
		t.Errorf("bridge VLANs: eno1 %d entries, vmbr0 %v", len(v["eno1"]), v["vmbr0"])
	}
}
