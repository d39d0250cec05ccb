package bootptab

import (
	"strings"
	"testing"

	"github.com/berthhq/berth/internal/netboot/hostdb/hostdbtest"
)

// FuzzParse checks that Parse never panics, that every host it returns
// is valid, and that every error names a line of the input.
func FuzzParse(f *testing.F) {
	f.Add("aldebaran.foo.com:ha=006008C7A3D8:ip=\n192.168.1.100:bf=/tftpboot/vmlinux.nb\n")
	f.Add(".d:\\\n\t:sa=10.0.0.1:\nh:tc=.d:ha=0200.0000.0001:ip=10.0.0.2:T150=\"x\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		hosts, errs := Parse(strings.NewReader(in))
		hostdbtest.CheckParse(t, in, hosts, errs)
	})
}
