package ctinit

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestStackPool checks that children's stacks given back are reused,
// most recent first, and that those beyond maxFreeStacks are unmapped.
// (Whether an address is still mapped cannot be read from
// /proc/self/maps: the runtime may map something else there at once.)
func TestStackPool(t *testing.T) {
	stacks.Lock()
	stacks.free = nil // this test's own view of the pool
	stacks.Unlock()
	var unmapped []*byte
	unmapStack = func(s []byte) error {
		unmapped = append(unmapped, &s[0])
		return unix.Munmap(s)
	}
	defer func() { unmapStack = unix.Munmap }()

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
	if len(unmapped) != 3 || unmapped[0] != &got[maxFreeStacks][0] || unmapped[2] != &got[maxFreeStacks+2][0] {
		t.Errorf("unmapped %v, want the 3 stacks given back beyond the %d kept", unmapped, maxFreeStacks)
	}
	s, err := getStack()
	if err != nil {
		t.Fatal(err)
	}
	if &s[0] != &got[maxFreeStacks-1][0] {
		t.Errorf("getStack after putStack gave %p, want the last kept stack %p", &s[0], &got[maxFreeStacks-1][0])
	}
	s[0] = 2 // still mapped
	putStack(s)
	putStack(nil) // nothing to give back
	stacks.Lock()
	n := len(stacks.free)
	stacks.Unlock()
	if n != maxFreeStacks || len(unmapped) != 3 {
		t.Errorf("%d stacks kept and %d unmapped, want %d and 3", n, len(unmapped), maxFreeStacks)
	}
}
