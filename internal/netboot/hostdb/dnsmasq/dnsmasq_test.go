package dnsmasq

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	wire "github.com/berthhq/berth/api"
)

func TestParse(t *testing.T) {
	in := `# dnsmasq.conf
interface=br0
dhcp-range=10.0.0.50,10.0.0.150,12h
dhcp-host=52:54:00:aa:bb:01,10.0.0.11,node1,infinite
dhcp-host=52:54:00:AA:BB:02,node2,10.0.0.12
dhcp-host=52:54:00:aa:bb:03,set:pxe,10.0.0.13,45m
dhcp-host=52:54:00:aa:bb:04,ignore
dhcp-host=id:client1,10.0.0.20
52:54:00:aa:bb:05,10.0.0.15,node5
dhcp-host=52:54:00:aa:bb:*,10.0.0.16
dhcp-host=52:54:00:aa:bb:07,52:54:00:aa:bb:08,10.0.0.17
dhcp-host=52:54:00:aa:bb:09,10.0.0.999
dhcp-host=52:54:00:aa:bb:0a,10.0.0.18,bad_name!
`
	hosts, errs := Parse(strings.NewReader(in))
	c := func(n int) string { return "imported from dnsmasq line " + string(rune('0'+n)) }
	want := []wire.NetbootHost{
		{MAC: "52:54:00:aa:bb:01", IP: "10.0.0.11", Name: "node1", Comment: c(4)},
		{MAC: "52:54:00:aa:bb:02", IP: "10.0.0.12", Name: "node2", Comment: c(5)},
		{MAC: "52:54:00:aa:bb:03", IP: "10.0.0.13", Comment: c(6)},
		{MAC: "52:54:00:aa:bb:05", IP: "10.0.0.15", Name: "node5", Comment: c(9)},
	}
	if diff := cmp.Diff(want, hosts); diff != "" {
		t.Fatalf("hosts mismatch (-want +got):\n%s", diff)
	}
	var lines []int
	for _, e := range errs {
		lines = append(lines, e.Line)
	}
	if diff := cmp.Diff([]int{10, 11, 12, 13}, lines); diff != "" {
		t.Fatalf("error lines mismatch (-want +got):\n%s\n%v", diff, errs)
	}
}
