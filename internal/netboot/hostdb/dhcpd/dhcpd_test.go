package dhcpd

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	wire "github.com/berthhq/berth/api"
)

func TestParse(t *testing.T) {
	in := `# dhcpd.conf
option domain-name "example.org";
default-lease-time 600;
subnet 10.0.0.0 netmask 255.255.255.0 {
  range 10.0.0.100 10.0.0.200;
  next-server 10.0.0.1;
  filename "pxelinux.0";
  host alpha {
    hardware ethernet 52:54:00:00:00:01;
    fixed-address 10.0.0.11;
  }
  group {
    filename "undionly.kpxe";
    host beta {
      hardware ethernet 52:54:00:00:00:02;
      fixed-address 10.0.0.12;
      option root-path "10.0.0.1:/srv/beta";
      option host-name "beta-node";
      option routers 10.0.0.254;
    }
  }
}
host gamma { hardware ethernet 52:54:00:00:00:03; filename "ipxe.efi"; next-server 10.0.0.2; }
class "foo" { match if substring (option vendor-class-identifier, 0, 9) = "PXEClient"; }
host delta {
  hardware ethernet 52:54:00:00:00:zz;
  fixed-address 10.0.0.14;
}
host epsilon {
  fixed-address 10.0.0.15;
}
host zeta {
  hardware ethernet 52:54:00:00:00:06;
  fixed-address zeta.example.org;
}
`
	hosts, errs := Parse(strings.NewReader(in))
	want := []wire.NetbootHost{
		{MAC: "52:54:00:00:00:01", Name: "alpha", IP: "10.0.0.11", BootFile: "pxelinux.0", NextServer: "10.0.0.1", Options: map[string]string{"15": "example.org"}, Comment: "imported from dhcpd.conf host alpha"},
		{MAC: "52:54:00:00:00:02", Name: "beta-node", IP: "10.0.0.12", BootFile: "undionly.kpxe", NextServer: "10.0.0.1", RootPath: "10.0.0.1:/srv/beta",
			Options: map[string]string{"3": "10.0.0.254", "15": "example.org"}, Comment: "imported from dhcpd.conf host beta"},
		{MAC: "52:54:00:00:00:03", Name: "gamma", BootFile: "ipxe.efi", NextServer: "10.0.0.2", Options: map[string]string{"15": "example.org"}, Comment: "imported from dhcpd.conf host gamma"},
	}
	if diff := cmp.Diff(want, hosts); diff != "" {
		t.Fatalf("hosts mismatch (-want +got):\n%s", diff)
	}
	var lines []int
	for _, e := range errs {
		lines = append(lines, e.Line)
	}
	if diff := cmp.Diff([]int{26, 29, 34}, lines); diff != "" {
		t.Fatalf("error lines mismatch (-want +got):\n%s\n%v", diff, errs)
	}
}

func TestUnterminated(t *testing.T) {
	for _, in := range []string{`host a { hardware ethernet 52:54:00:00:00:01;`, `host a { filename "x`, `subnet 1 {`} {
		if _, errs := Parse(strings.NewReader(in)); len(errs) == 0 {
			t.Errorf("%q: no error", in)
		}
	}
}
