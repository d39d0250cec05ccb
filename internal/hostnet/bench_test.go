package hostnet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthhq/berth/internal/ifupdown"
)

// bigConfig is n groups of NICs, a bond, a VLAN, two bridges and a VLAN
// interface: 8 interfaces each.
func bigConfig(groups int) string {
	var b strings.Builder
	b.WriteString("auto lo\niface lo inet loopback\n\n")
	for g := 0; g < groups; g++ {
		a, c, d := 3*g, 3*g+1, 3*g+2
		vid := 10 + g%4000
		fmt.Fprintf(&b, "iface ens%d inet manual\n\niface ens%d inet manual\n\niface ens%d inet manual\n\n", a, c, d)
		fmt.Fprintf(&b, "auto bond%d\niface bond%d inet manual\n\tbond-slaves ens%d ens%d\n\tbond-mode 802.3ad\n\tbond-miimon 100\n\n", g, g, a, c)
		fmt.Fprintf(&b, "iface bond%d.%d inet manual\n\n", g, vid)
		fmt.Fprintf(&b, "auto vmbr%dv%d\niface vmbr%dv%d inet manual\n\tbridge-ports bond%d.%d\n\tbridge-stp off\n\tbridge-fd 0\n\n", g, vid, g, vid, g, vid)
		fmt.Fprintf(&b, "auto vmbr%d\niface vmbr%d inet static\n\taddress 10.%d.%d.1/24\n\tbridge-ports ens%d\n\n", g, g, g/256, g%256, d)
		fmt.Fprintf(&b, "auto vmbr%d.%d\niface vmbr%d.%d inet static\n\taddress 172.16.%d.1/24\n\n", g, vid, g, vid, g%256)
	}
	return b.String()
}

// BenchmarkParseValidatePlan is the work of an apply before any change, on
// a 2,000-interface file (make bench-net compares it with ifupdown2).
func BenchmarkParseValidatePlan(b *testing.B) {
	path := filepath.Join(b.TempDir(), "interfaces")
	os.WriteFile(path, []byte(bigConfig(250)), 0o644)
	c0, err := ifupdown.Load(ifupdown.OS, path, nil)
	if err != nil {
		b.Fatal(err)
	}
	live := &Live{Links: map[string]*Link{}, Gateways: map[string]Route{}}
	for _, i := range c0.Ifaces {
		if i.Type() == ifupdown.TypePhysical {
			live.Links[i.Name] = &Link{Name: i.Name, Type: "device", MTU: 1500, Up: true}
		}
	}
	b.ResetTimer()
	for b.Loop() {
		c, err := ifupdown.Load(ifupdown.OS, path, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := ifupdown.Validate(c, live.Names()); err != nil {
			b.Fatal(err)
		}
		if _, err := Plan(c, nil, live); err != nil {
			b.Fatal(err)
		}
	}
}
