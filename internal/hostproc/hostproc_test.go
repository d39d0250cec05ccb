package hostproc

import (
	"os"
	"testing"
)

func TestParent(t *testing.T) {
	p := Proc("/proc")
	if got, err := p.Parent(os.Getpid()); err != nil || got != os.Getppid() {
		t.Errorf("Parent(self) = %d, %v; want %d", got, err, os.Getppid())
	}
	if _, err := p.Parent(-1); err == nil {
		t.Error("Parent(-1) succeeded")
	}
}
