package dnsmasq

import (
	"strings"
	"testing"

	"github.com/berthhq/berth/internal/netboot/hostdb/hostdbtest"
)

// FuzzParse checks that Parse never panics, that every host it returns
// is valid, and that every error names a line of the input.
func FuzzParse(f *testing.F) {
	f.Add("dhcp-host=52:54:00:aa:bb:01,10.0.0.11,node1,infinite\n")
	f.Add("52:54:00:aa:bb:05,10.0.0.15,node5\ndhcp-host=id:x,set:y,[::1],5m,ignore\n")
	f.Fuzz(func(t *testing.T, in string) {
		hosts, errs := Parse(strings.NewReader(in))
		hostdbtest.CheckParse(t, in, hosts, errs)
	})
}
