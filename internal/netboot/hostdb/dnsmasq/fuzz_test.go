package dnsmasq

import (
	"strings"
	"testing"

	"github.com/berthhq/berth/internal/netboot/hostdb"
)

// FuzzParse checks that Parse never panics, that every host it returns
// is valid, and that every error names a line of the input.
func FuzzParse(f *testing.F) {
	f.Add("dhcp-host=52:54:00:aa:bb:01,10.0.0.11,node1,infinite\n")
	f.Add("52:54:00:aa:bb:05,10.0.0.15,node5\ndhcp-host=id:x,set:y,[::1],5m,ignore\n")
	f.Fuzz(func(t *testing.T, in string) {
		hosts, errs := Parse(strings.NewReader(in))
		for _, h := range hosts {
			if _, err := hostdb.Normalize(h); err != nil {
				t.Fatalf("returned an invalid host: %v", err)
			}
		}
		lines := strings.Count(in, "\n") + 2
		for _, e := range errs {
			if e.Line < 1 || e.Line > lines {
				t.Fatalf("error names line %d of a %d-line input: %v", e.Line, lines, e)
			}
		}
	})
}
