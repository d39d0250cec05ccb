package ctinit

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// mapped reports whether s's first byte lies in a mapping of
// /proc/self/maps (neighbouring stacks may share one).
func mapped(t *testing.T, s []byte) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	a := uint64(uintptr(unsafe.Pointer(&s[0])))
	for _, l := range strings.Split(string(b), "\n") {
		var lo, hi uint64
		if _, err := fmt.Sscanf(l, "%x-%x", &lo, &hi); err == nil && lo <= a && a < hi {
			return true
		}
	}
	return false
}

// TestStackPool checks that children's stacks given back are reused,
// most recent first, and that those beyond maxFreeStacks are unmapped.
func TestStackPool(t *testing.T) {
	stacks.Lock()
	stacks.free = nil // this test's own view of the pool
	stacks.Unlock()
	var got [][]byte
	for range maxFreeStacks + 3 {
		s, err := getStack()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != childStack {
			t.Fatalf("stack of %d bytes, want %d", len(s), childStack)
		}
		s[0], s[len(s)-1] = 1, 1 // writable at both ends
		got = append(got, s)
	}
	for _, s := range got {
		putStack(s)
	}
	for i, s := range got {
		if want := i < maxFreeStacks; mapped(t, s) != want {
			t.Errorf("stack %d given back: mapped %v, want %v (%d are kept)", i, !want, want, maxFreeStacks)
		}
	}
	s, err := getStack()
	if err != nil {
		t.Fatal(err)
	}
	if &s[0] != &got[maxFreeStacks-1][0] {
		t.Errorf("getStack after putStack gave %p, want the last kept stack %p", &s[0], &got[maxFreeStacks-1][0])
	}
	putStack(s)
	putStack(nil) // nothing to give back
	stacks.Lock()
	n := len(stacks.free)
	stacks.Unlock()
	if n != maxFreeStacks {
		t.Errorf("%d stacks kept, want %d", n, maxFreeStacks)
	}
}
