package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSubnetSkipsHeld holds the lock of the subnet this process would
// get first for network 7, as another test process would: Subnet picks
// another free one, keeps returning it, and holds its lock.
func TestSubnetSkipsHeld(t *testing.T) {
	first := fmt.Sprintf("10.167.%d", os.Getpid()%250+1)
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "berth-test-net-"+first+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Skipf("another process holds %s: %v", f.Name(), err)
	}
	got := Subnet(7)
	if got == first || !strings.HasPrefix(got, "10.167.") {
		t.Fatalf("Subnet(7) = %s while %s is held; want another 10.167.X", got, first)
	}
	if again := Subnet(7); again != got {
		t.Errorf("Subnet(7) changed from %s to %s", got, again)
	}
	g, err := os.OpenFile(filepath.Join(os.TempDir(), "berth-test-net-"+got+".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := syscall.Flock(int(g.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		t.Errorf("the lock of %s is free: Subnet does not hold it", got)
	}
}
