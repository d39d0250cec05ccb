package dhcpd

import (
	"strings"
	"testing"

	"github.com/berthhq/berth/internal/netboot/hostdb/hostdbtest"
)

// FuzzParse checks that Parse never panics, that every host it returns
// is valid, and that every error names a line of the input.
func FuzzParse(f *testing.F) {
	f.Add("host a { hardware ethernet 52:54:00:00:00:01; fixed-address 10.0.0.1; filename \"x\"; }\n")
	f.Add("subnet 10.0.0.0 netmask 255.0.0.0 { group { next-server 10.0.0.1; host b { hardware ethernet 52:54:00:00:00:02; option root-path \"/r\"; } } }")
	f.Fuzz(func(t *testing.T, in string) {
		hosts, errs := Parse(strings.NewReader(in))
		hostdbtest.CheckParse(t, in, hosts, errs)
	})
}
