package bootptab

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	wire "github.com/berthhq/berth/api"
)

func TestParse(t *testing.T) {
	in := `# bootptab as bootpd(8) reads it
.default:\
	:hd=/tftpboot:bf=null:\
	:sa=192.168.1.1:ds=192.168.1.1 192.168.1.2:

aldebaran.foo.com:ha=006008C7A3D8:ip=
192.168.1.100:bf=/tftpboot/vmlinux.nb
antares:tc=.default:ha=00.60.08.c7.a3.d9:ip=192.168.1.101:\
	:bf=vmlinux.nb:rp="/tftpboot/192.168.1.101":T150="grub.cfg"
noboot:tc=.default:ha=0060.08c7.a3da:bf@:ip=192.168.1.102
`
	hosts, errs := Parse(strings.NewReader(in))
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	want := []wire.NetbootHost{
		{MAC: "00:60:08:c7:a3:d8", Name: "aldebaran.foo.com", IP: "192.168.1.100", BootFile: "/tftpboot/vmlinux.nb", Comment: "imported from bootptab entry aldebaran.foo.com"},
		{MAC: "00:60:08:c7:a3:d9", Name: "antares", IP: "192.168.1.101", BootFile: "/tftpboot/vmlinux.nb", NextServer: "192.168.1.1", RootPath: "/tftpboot/192.168.1.101",
			Options: map[string]string{"150": "grub.cfg", "6": "192.168.1.1,192.168.1.2"}, Comment: "imported from bootptab entry antares"},
		{MAC: "00:60:08:c7:a3:da", Name: "noboot", IP: "192.168.1.102", NextServer: "192.168.1.1",
			Options: map[string]string{"6": "192.168.1.1,192.168.1.2"}, Comment: "imported from bootptab entry noboot"},
	}
	if diff := cmp.Diff(want, hosts); diff != "" {
		t.Fatalf("mismatch (-want +got):\n%s", diff)
	}
}

func TestErrors(t *testing.T) {
	in := `good:ha=020000000001:ip=10.0.0.1
bad-mac:ha=zz:ip=10.0.0.2
bad-ip:ha=020000000003:\
	:ip=10.0.0.300
loop:tc=loop2:ha=020000000004
loop2:tc=loop
missing:tc=nothere:ha=020000000005
quote:ha="0200
`
	hosts, errs := Parse(strings.NewReader(in))
	if len(hosts) != 1 || hosts[0].Name != "good" {
		t.Fatalf("hosts %v", hosts)
	}
	var lines []int
	for _, e := range errs {
		lines = append(lines, e.Line)
	}
	if diff := cmp.Diff([]int{2, 4, 5, 6, 7, 8}, lines); diff != "" {
		t.Fatalf("error lines mismatch (-want +got):\n%s\n%v", diff, errs)
	}
}
