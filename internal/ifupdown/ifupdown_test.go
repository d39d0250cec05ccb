package ifupdown

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// dump renders what berth understood of a configuration, one interface a
// line, for golden files.
func dump(c *Config) string {
	var b strings.Builder
	for _, i := range c.Ifaces {
		fmt.Fprintf(&b, "%s type=%s", i.Name, i.Type())
		if i.Auto {
			b.WriteString(" auto")
		}
		if i.Hotplug {
			b.WriteString(" hotplug")
		}
		for _, fam := range []string{"inet", "inet6"} {
			if m := i.Method(fam); m != "" {
				fmt.Fprintf(&b, " %s=%s", fam, m)
			}
		}
		addrs, err := i.Addresses()
		if err != nil {
			fmt.Fprintf(&b, " addr-error=%q", err)
		}
		for _, a := range addrs {
			fmt.Fprintf(&b, " addr=%s", a)
		}
		if v, ok := i.Get("gateway"); ok {
			fmt.Fprintf(&b, " gw=%s", v)
		}
		switch i.Type() {
		case TypeBridge:
			fmt.Fprintf(&b, " ports=%q", i.Ports())
		case TypeBond:
			fmt.Fprintf(&b, " slaves=%q", i.Slaves())
		case TypeVLAN:
			raw, id, _ := i.VLAN()
			fmt.Fprintf(&b, " raw=%s vid=%d", raw, id)
		}
		b.WriteString("\n")
		for _, o := range i.Options() {
			fmt.Fprintf(&b, "\t%d %s=%q\n", o.Line.Num, o.Key, o.Value)
		}
	}
	fmt.Fprintf(&b, "up: %s\n", strings.Join(c.Order(c.Up()), " "))
	return b.String()
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, d)
	}
}

// TestSeeds parses the setups of the Proxmox network chapter: each must
// round-trip byte for byte, validate, and be understood as the golden
// file says.
func TestSeeds(t *testing.T) {
	files, _ := filepath.Glob("testdata/seeds/*.interfaces")
	if len(files) < 8 {
		t.Fatalf("only %d seed files", len(files))
	}
	for _, p := range files {
		t.Run(filepath.Base(p), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			f, err := Parse("interfaces", data)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Bytes(); string(got) != string(data) {
				t.Fatalf("round trip changed the file:\n%s", cmp.Diff(string(data), string(got)))
			}
			c := FromFile(f)
			if err := Validate(c, nil); err != nil {
				t.Fatal(err)
			}
			golden(t, strings.TrimSuffix(p, ".interfaces")+".golden", dump(c))
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"address 1.2.3.4/24\n", "interfaces:1: option \"address\" outside an iface stanza"},
		{"auto lo\n  address 1.2.3.4/24\n", "interfaces:2: option \"address\" outside"},
		{"\n\niface\n", "interfaces:3: iface without an interface name"},
		{"iface eth0 inet static extra\n", "interfaces:1: iface eth0: unexpected \"extra\""},
		{"source\n", "interfaces:1: source without a path"},
	} {
		_, err := Parse("interfaces", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		live     []string
		want     []string // substrings, each of one problem, in order
	}{
		{"bridge name", "iface eno1 inet manual\niface br0 inet manual\n bridge-ports eno1\n",
			nil, []string{"interfaces:3: iface br0: bridges are named vmbrN"}},
		{"bridge number", "iface vmbr4095 inet manual\n bridge-ports none\n", nil, []string{"out of range: bridges are vmbr0 to vmbr4094"}},
		{"missing port", "auto vmbr0\niface vmbr0 inet static\n address 10.0.0.1/24\n bridge-ports eno7\n",
			nil, []string{"interfaces:4: iface vmbr0: bridge port eno7 does not exist"}},
		{"live port", "iface vmbr0 inet manual\n bridge-ports eno7\n", []string{"eno7"}, nil},
		{"port twice", "iface eno1 inet manual\niface vmbr0 inet manual\n bridge-ports eno1\niface vmbr1 inet manual\n bridge-ports eno1\n",
			nil, []string{"interfaces:5: iface vmbr1: eno1 is already a port of vmbr0"}},
		{"address on port", "iface eno1 inet static\n address 10.0.0.2/24\niface vmbr0 inet manual\n bridge-ports eno1\n",
			nil, []string{"interfaces:2: iface eno1: has an address but is a port of bridge vmbr0"}},
		{"cidr", "iface eno1 inet static\n address 10.0.0.300/24\n", nil, []string{"interfaces:2: iface eno1: address \"10.0.0.300/24\" is not in CIDR form"}},
		{"no prefix", "iface eno1 inet static\n address 10.0.0.3\n", nil, []string{"has no prefix length: write it as 10.0.0.3/24"}},
		{"netmask", "iface eno1 inet static\n address 10.0.0.3\n netmask 255.255.0.0\n", nil, nil},
		{"two gateways", "iface eno1 inet static\n address 10.0.0.2/24\n gateway 10.0.0.1\niface eno2 inet static\n address 10.1.0.2/24\n gateway 10.1.0.1\n",
			nil, []string{"interfaces:6: iface eno2: a second default gateway for inet (the first is on eno1)"}},
		{"gateways per family", "iface eno1 inet static\n address 10.0.0.2/24\n gateway 10.0.0.1\niface eno1 inet6 static\n address fd00::2/64\n gateway fd00::1\n", nil, nil},
		{"bond name", "iface eno1 inet manual\niface team0 inet manual\n bond-slaves eno1\n", nil, []string{"bonds are named bondN"}},
		{"bond mode", "iface eno1 inet manual\niface bond0 inet manual\n bond-slaves eno1\n bond-mode fastest\n bond-miimon x\n bond-xmit-hash-policy layer9\n",
			nil, []string{"interfaces:4: iface bond0: bond-mode \"fastest\"", "interfaces:5: iface bond0: bond-miimon", "interfaces:6: iface bond0: bond-xmit-hash-policy \"layer9\""}},
		{"bond mode number", "iface eno1 inet manual\niface bond0 inet manual\n bond-slaves eno1\n bond-mode 4\n", nil, nil},
		{"bond slave missing", "iface bond0 inet manual\n bond-slaves eno1 eno2\n", []string{"eno1"}, []string{"interfaces:2: iface bond0: bond slave eno2 does not exist"}},
		{"slave in two bonds", "iface eno1 inet manual\niface bond0 inet manual\n bond-slaves eno1\niface bond1 inet manual\n bond-slaves eno1\n",
			nil, []string{"interfaces:5: iface bond1: eno1 is already a slave of bond0"}},
		{"slave is bridge port", "iface eno1 inet manual\niface bond0 inet manual\n bond-slaves eno1\niface vmbr0 inet manual\n bridge-ports eno1\n",
			nil, []string{"interfaces:3: iface bond0: slave eno1 is also a port of bridge vmbr0"}},
		{"vlan id", "iface eno1 inet manual\niface eno1.4095 inet manual\n", nil, []string{"interfaces:2: iface eno1.4095: VLAN ID 4095 is out of range 1-4094"}},
		{"vlan zero", "iface eno1 inet manual\niface eno1.0 inet manual\n", nil, []string{"VLAN ID 0 is out of range"}},
		{"vlan raw missing", "iface eno9.5 inet manual\n", nil, []string{"VLAN raw device eno9 does not exist"}},
		{"vlan bridge name", "iface eno1 inet manual\niface vmbr0v4095 inet manual\n bridge-ports eno1\n", nil, []string{"VLAN 4095 in the bridge name is out of range"}},
		{"physical name", "iface wlan0 inet dhcp\n", nil, []string{"interfaces:1: iface wlan0: \"wlan0\" is not a known interface type"}},
		{"dummy", "iface wan0 inet manual\n link-type dummy\n", nil, nil},
		{"mtu", "iface eno1 inet manual\n mtu 9\n", nil, []string{"mtu \"9\": use a number from 68 to 65535"}},
		{"method", "iface eno1 inet ppp\n", nil, []string{"method \"ppp\" is not supported"}},
		{"stp", "iface vmbr0 inet manual\n bridge-ports none\n bridge-stp maybe\n bridge-fd 99\n", nil,
			[]string{"interfaces:3: iface vmbr0: bridge-stp \"maybe\"", "interfaces:4: iface vmbr0: bridge-fd \"99\""}},
		{"vids", "iface vmbr0 inet manual\n bridge-ports none\n bridge-vlan-aware yes\n bridge-vids 2-5000\n", nil, []string{"VLAN IDs \"2-5000\""}},
		{"vids not aware", "iface vmbr0 inet manual\n bridge-ports none\n bridge-vids 2-10\n", nil, []string{"bridge-vids needs 'bridge-vlan-aware yes'"}},
		{"long name", "iface enp0s31f6abcdefgh inet manual\n", nil, []string{"at most 15"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("interfaces", []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			live := map[string]bool{}
			for _, n := range tc.live {
				live[n] = true
			}
			err = Validate(FromFile(f), live)
			var got []string
			if ve, ok := err.(*ValidationError); ok {
				for _, p := range ve.Problems {
					got = append(got, p.String())
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems %q, want %d like %q", len(got), got, len(tc.want), tc.want)
			}
			for k := range got {
				if !strings.Contains(got[k], tc.want[k]) {
					t.Errorf("problem %d = %q, want it to contain %q", k, got[k], tc.want[k])
				}
			}
		})
	}
}

func TestEdits(t *testing.T) {
	data, err := os.ReadFile("testdata/seeds/nat.interfaces")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("interfaces", data)
	if err != nil {
		t.Fatal(err)
	}
	br := f.Ifaces("vmbr0")[0]
	f.SetOption(br, "address", "10.10.20.1/24") // rewritten in place
	f.SetOption(br, "mtu", "9000")              // appended after the last option
	f.DeleteOption(br, "bridge-fd")
	f.AddIface("vmbr1", "inet", "manual", true, []Option{{Key: "bridge-ports", Value: "none"}, {Key: "bridge-stp", Value: "off"}})
	f.SetAuto("eno1", false)
	golden(t, "testdata/edit-nat.golden", string(f.Bytes()))

	// Removing what was added gives back the edited file minus vmbr1.
	g, err := Parse("interfaces", f.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !g.RemoveIface("vmbr1") {
		t.Fatal("RemoveIface reported no change")
	}
	if strings.Contains(string(g.Bytes()), "vmbr1") {
		t.Fatalf("vmbr1 still there:\n%s", g.Bytes())
	}
	if err := Validate(FromFile(g), nil); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveIface(t *testing.T) {
	in := "auto lo\niface lo inet loopback\n\nauto eno1 eno2\niface eno1 inet manual\n\t# about eno1\n\tmtu 9000\n# trailing comment\n\niface eno2 inet manual\n"
	f, err := Parse("interfaces", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	f.RemoveIface("eno1")
	want := "auto lo\niface lo inet loopback\n\nauto eno2\n# trailing comment\n\niface eno2 inet manual\n"
	if d := cmp.Diff(want, string(f.Bytes())); d != "" {
		t.Errorf("mismatch (-want +got):\n%s", d)
	}
}

func TestIncludes(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "interfaces.d"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "interfaces"), []byte("source-directory interfaces.d\nsource extra/*.cfg\nauto lo\niface lo inet loopback\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "interfaces.d", "vmbr0"), []byte("auto vmbr0\niface vmbr0 inet manual\n\tbridge-ports none\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "interfaces.d", "skip.bak"), []byte("iface eno5 inet manual\n"), 0o644))
	must(os.MkdirAll(filepath.Join(dir, "extra"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "extra", "a.cfg"), []byte("iface eno1 inet manual\n\tmtu 9000\n"), 0o644))
	c, err := Load(OS, filepath.Join(dir, "interfaces"), nil)
	must(err)
	if d := cmp.Diff([]string{"vmbr0", "eno1", "lo"}, c.Names()); d != "" {
		t.Errorf("names mismatch (-want +got):\n%s", d)
	}
	if !c.Iface("vmbr0").Auto || len(c.Files) != 3 {
		t.Errorf("vmbr0 auto=%v, %d files", c.Iface("vmbr0").Auto, len(c.Files))
	}
	if p, _ := c.Iface("eno1").Line(); p != filepath.Join(dir, "extra", "a.cfg") {
		t.Errorf("eno1 defined in %s", p)
	}
}
