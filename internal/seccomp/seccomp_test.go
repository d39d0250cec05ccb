package seccomp

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv("BERTH_SECCOMP_CHILD") == "1" {
		child()
		return
	}
	if os.Getenv("BERTH_SECCOMP_CHILD") == "nomerge" {
		noMergeChild()
		return
	}
	os.Exit(m.Run())
}

// child installs the filter in this (re-executed) test process and reports
// what the kernel answers to denied and allowed calls.
func child() {
	if err := Install(); err != nil {
		fmt.Println("install:", err)
		os.Exit(1)
	}
	_, _, keyctl := unix.RawSyscall(unix.SYS_KEYCTL, 0, ^uintptr(2), 0) // KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING
	_, _, bpf := unix.RawSyscall(unix.SYS_BPF, 0, 0, 0)
	_, _, handle := unix.RawSyscall6(unix.SYS_OPEN_BY_HANDLE_AT, 0, 0, 0, 0, 0, 0)
	_, _, getpid := unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
	fmt.Printf("keyctl=%d bpf=%d open_by_handle_at=%d getpid=%d\n", keyctl, bpf, handle, getpid)
	os.Exit(0)
}

// noMergeChild installs both filters and reports what madvise and prctl
// answer for KSM and for other requests.
func noMergeChild() {
	if err := Install(); err != nil {
		fmt.Println("install:", err)
		os.Exit(1)
	}
	if err := InstallNoMerge(); err != nil {
		fmt.Println("install no-merge:", err)
		os.Exit(1)
	}
	mem, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		fmt.Println("mmap:", err)
		os.Exit(1)
	}
	errno := func(err error) int {
		if e, ok := err.(unix.Errno); ok {
			return int(e)
		}
		return 0
	}
	merge := unix.Madvise(mem, unix.MADV_MERGEABLE)
	normal := unix.Madvise(mem, unix.MADV_NORMAL)
	anyOn := unix.Prctl(unix.PR_SET_MEMORY_MERGE, 1, 0, 0, 0)
	dumpable := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
	fmt.Printf("mergeable=%d normal=%d merge_any=%d dumpable=%d\n", errno(merge), errno(normal), errno(anyOn), errno(dumpable))
	os.Exit(0)
}

// childReports re-executes the test binary in child mode mode and checks
// that its report contains want.
func childReports(t *testing.T, mode, want string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_SECCOMP_CHILD="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), want) {
		t.Errorf("child reported %q, want %q", out, want)
	}
}

// TestNoMergeFilter checks that a ksm=0 container's processes cannot make
// memory mergeable either way, while other madvise and prctl calls work.
func TestNoMergeFilter(t *testing.T) {
	childReports(t, "nomerge", fmt.Sprintf("mergeable=%d normal=0 merge_any=%d dumpable=0", unix.EINVAL, unix.EINVAL))
}

func TestFilterRefusesDeniedCalls(t *testing.T) {
	childReports(t, "1", fmt.Sprintf("keyctl=%d bpf=%d open_by_handle_at=%d getpid=0", unix.EPERM, unix.EPERM, unix.EPERM))
}

func TestProgramShape(t *testing.T) {
	p := Program()
	if len(p) != 6+len(Denied)+2 {
		t.Errorf("program has %d instructions for %d denied calls", len(p), len(Denied))
	}
	for i, ins := range p {
		if ins.Code&0x07 == unix.BPF_JMP && int(ins.Jt)+i+1 >= len(p) {
			t.Errorf("instruction %d jumps past the end", i)
		}
	}
}
