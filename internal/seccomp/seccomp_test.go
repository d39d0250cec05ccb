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

func TestFilterRefusesDeniedCalls(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_SECCOMP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := fmt.Sprintf("keyctl=%d bpf=%d open_by_handle_at=%d getpid=0", unix.EPERM, unix.EPERM, unix.EPERM)
	if !strings.Contains(string(out), want) {
		t.Errorf("child reported %q, want %q", out, want)
	}
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
