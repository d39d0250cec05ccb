package hostnet

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berthhq/berth/internal/ifupdown"
)

func cfg(t *testing.T, text string) *ifupdown.Config {
	t.Helper()
	f, err := ifupdown.Parse("interfaces", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return ifupdown.FromFile(f)
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestPlan checks the planner on snapshots, without touching a kernel.
func TestPlan(t *testing.T) {
	const bridged = "auto lo\niface lo inet loopback\niface eno1 inet manual\nauto vmbr0\niface vmbr0 inet static\n\taddress 10.0.0.2/24\n\tgateway 10.0.0.1\n\tbridge-ports eno1\n\tbridge-stp off\n\tbridge-fd 0\n"
	nic := func(name string) *Link { return &Link{Name: name, Type: "veth", MTU: 1500, Up: true} }
	lo := &Link{Name: "lo", Type: "device", MTU: 65536, Up: true, Addrs: []netip.Prefix{pfx("127.0.0.1/8")}}
	applied := func() *Live {
		return &Live{Links: map[string]*Link{
			"lo":       lo,
			"eno1":     {Name: "eno1", Type: "veth", MTU: 1500, Up: true, Master: "vmbr0"},
			"vmbr0":    {Name: "vmbr0", Type: "bridge", MTU: 1500, Up: true, Addrs: []netip.Prefix{pfx("10.0.0.2/24"), pfx("fe80::1/64")}},
			"tap100i0": {Name: "tap100i0", Type: "tun", MTU: 1500, Up: true, Master: "vmbr0"},
		}, Gateways: map[string]Route{"inet": {Gateway: netip.MustParseAddr("10.0.0.1"), Dev: "vmbr0"}}}
	}
	for _, tc := range []struct {
		name      string
		cur, prev string
		live      *Live
		want      []string
		wantErr   string
	}{
		{name: "fresh bridge", cur: bridged,
			live: &Live{Links: map[string]*Link{"lo": lo, "eno1": nic("eno1")}, Gateways: map[string]Route{}},
			want: []string{"vmbr0: create bridge stp off fd 0 vlan-aware off", "eno1: join vmbr0", "vmbr0: add address 10.0.0.2/24", "vmbr0: up", "default route (inet) via 10.0.0.1"}},
		{name: "no-op keeps guests and link-local", cur: bridged, prev: bridged, live: applied()},
		{name: "address and mtu change", cur: strings.Replace(bridged, "10.0.0.2/24", "10.0.0.3/24", 1) + "\tmtu 9000\n", prev: bridged, live: applied(),
			want: []string{"vmbr0: mtu 9000", "vmbr0: add address 10.0.0.3/24", "vmbr0: remove address 10.0.0.2/24"}},
		{name: "removing a bridge with a guest is refused", cur: "auto lo\niface lo inet loopback\n", prev: bridged, live: applied(),
			wantErr: "guest ports tap100i0 still sit on it"},
		{name: "a port leaves, the guest stays", cur: strings.Replace(bridged, "bridge-ports eno1", "bridge-ports none", 1), prev: bridged, live: applied(),
			want: []string{"eno1: leave vmbr0"}},
		{name: "hooks of a changed stanza: old down, new up", cur: bridged + "\tpost-up echo new\n", prev: bridged + "\tpost-down echo old\n", live: applied(),
			want: []string{"vmbr0: post-down echo old", "vmbr0: post-up echo new"}},
		{name: "missing NIC is checked", cur: "auto eno7\niface eno7 inet manual\n", live: &Live{Links: map[string]*Link{}, Gateways: map[string]Route{}},
			want: []string{"eno7: check the NIC exists", "eno7: up"}},
		{name: "dhcp leaves leases alone", cur: "auto eno1\niface eno1 inet dhcp\n", prev: "auto eno1\niface eno1 inet dhcp\n",
			live: &Live{Links: map[string]*Link{"eno1": {Name: "eno1", Type: "veth", Up: true, Addrs: []netip.Prefix{pfx("192.0.2.50/24")}}}, Gateways: map[string]Route{}}},
		{name: "static to manual removes what the old file declared", cur: "auto eno1\niface eno1 inet manual\n", prev: "auto eno1\niface eno1 inet static\n\taddress 192.0.2.5/24\n",
			live: &Live{Links: map[string]*Link{"eno1": {Name: "eno1", Type: "veth", Up: true, Addrs: []netip.Prefix{pfx("192.0.2.5/24"), pfx("198.51.100.9/24")}}}, Gateways: map[string]Route{}},
			want: []string{"eno1: remove address 192.0.2.5/24"}},
		{name: "bond and vlan", cur: "iface eno1 inet manual\niface eno2 inet manual\nauto bond0\niface bond0 inet manual\n\tbond-slaves eno1 eno2\n\tbond-mode 4\n\tbond-miimon 100\nauto bond0.5\niface bond0.5 inet static\n\taddress 10.5.0.2/24\n",
			live: &Live{Links: map[string]*Link{"eno1": nic("eno1"), "eno2": nic("eno2")}, Gateways: map[string]Route{}},
			want: []string{"bond0: create bond mode 802.3ad miimon 100", "eno1: join bond0", "eno2: join bond0", "bond0: up", "bond0.5: create vlan on bond0 id 5", "bond0.5: add address 10.5.0.2/24", "bond0.5: up"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prev *ifupdown.Config
			if tc.prev != "" {
				prev = cfg(t, tc.prev)
			}
			acts, err := Plan(cfg(t, tc.cur), prev, tc.live)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range acts {
				got = append(got, a.String())
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("plan mismatch (-want +got):\n%s", d)
			}
		})
	}
}
