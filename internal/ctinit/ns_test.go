package ctinit

import (
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNamespacesCloseOnlyTheirOwn makes user and network namespaces while
// another goroutine keeps opening files: each function must close exactly
// the descriptors it made (a descriptor closed twice can be another
// goroutine's by then), and the namespaces must be what was asked for.
func TestNamespacesCloseOnlyTheirOwn(t *testing.T) {
	if os.Getenv("BERTH_TEST_ROOT") != "1" || os.Geteuid() != 0 {
		t.Skip("needs root and BERTH_TEST_ROOT=1: makes user namespaces")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mine []*os.File
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if len(mine) >= 2000 {
				return
			}
			f, err := os.Open(os.DevNull)
			if err != nil {
				t.Error(err)
				return
			}
			mine = append(mine, f)
		}
	}()
	for i := 0; i < 20; i++ {
		base := 700000 + i*65536
		userns, err := NewUserNS(base, 65536)
		if err != nil {
			t.Fatal(err)
		}
		netns, rtnl, err := NewNetNS(userns)
		if err != nil {
			t.Fatal(err)
		}
		// The netlink socket lives in that network namespace: a device
		// ioctl on it finds the namespace's own loopback (index 1).
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlIfreq(rtnl, unix.SIOCGIFINDEX, ifr); err != nil || ifr.Uint32() != 1 {
			t.Errorf("lo through the netlink socket: index %d, %v", ifr.Uint32(), err)
		}
		unix.Close(rtnl)
		// The network namespace belongs to the new user namespace.
		owner, err := unix.IoctlRetInt(netns, unix.NS_GET_USERNS)
		if err != nil {
			t.Fatal(err)
		}
		var a, b unix.Stat_t
		if err := unix.Fstat(owner, &a); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fstat(userns, &b); err != nil {
			t.Fatal(err)
		}
		if a.Ino != b.Ino {
			t.Errorf("network namespace owned by user namespace %d, want %d", a.Ino, b.Ino)
		}
		unix.Close(owner)
		unix.Close(netns)
		unix.Close(userns)
	}
	close(stop)
	wg.Wait()
	for _, f := range mine {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatalf("a descriptor of the other goroutine was closed: %v", err)
		}
		f.Close()
	}
	if len(mine) == 0 {
		t.Fatal("the other goroutine opened nothing")
	}
	t.Logf("%d descriptors of the other goroutine survived", len(mine))
}
