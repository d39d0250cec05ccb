package umltest

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestBondAndVLANModules boots UML, loads bonding and 8021q (which this
// host kernel lacks) and creates a bond and a VLAN in it.
func TestBondAndVLANModules(t *testing.T) {
	if os.Getenv("BERTH_TEST_ROOT") != "1" {
		t.Skip("boots a UML kernel: set BERTH_TEST_ROOT=1 (make test does as root)")
	}
	res, err := Run(context.Background(), Options{
		Dir:     t.TempDir(),
		Modules: []string{"bonding max_bonds=0", "8021q", "dummy"},
		Script: `ip link add eno1 type dummy
ip link add bond0 type bond mode active-backup
ip link set eno1 master bond0
ip link add link bond0 name bond0.7 type vlan id 7
ip -o -d link show bond0.7
cat /proc/net/bonding/bond0
exit 3`,
	})
	if errors.Is(err, ErrNoUML) {
		t.Fatal(err, "(deps/hostnet.debs lists it; run make deps)")
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Exit != 3 {
		t.Errorf("exit status %d, want 3 (passed through)", res.Exit)
	}
	for _, want := range []string{"vlan protocol 802.1Q id 7", "Bonding Mode: fault-tolerance (active-backup)", "Slave Interface: eno1"} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("output lacks %q:\n%s", want, res.Output)
		}
	}
}

func TestModuleOrder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/modules.dep", []byte("kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\nkernel/d-x.ko:\n"), 0o644)
	got, err := moduleOrder(dir, []string{"a", "d_x"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{dir + "/kernel/c.ko", dir + "/kernel/b.ko", dir + "/kernel/a.ko", dir + "/kernel/d-x.ko"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("order %q, want %q", got, want)
	}
	if _, err := moduleOrder(dir, []string{"zz"}); err == nil {
		t.Error("missing module not reported")
	}
}
