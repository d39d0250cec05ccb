package seccomp

import (
	"fmt"
	"math/bits"
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

// run evaluates a classic BPF filter for one system call as the kernel
// does (the subset of instructions filters here use): the verdict, or an
// error for a jump past the end or an unknown instruction.
func run(p []unix.SockFilter, arch, nr uint32) (uint32, error) {
	var acc uint32
	for pc := 0; pc < len(p); pc++ {
		ins := p[pc]
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			switch ins.K {
			case offArch:
				acc = arch
			case offNr:
				acc = nr
			default:
				return 0, fmt.Errorf("instruction %d loads offset %d", pc, ins.K)
			}
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			taken := acc == ins.K
			if ins.Code&0xf0 == unix.BPF_JGE {
				taken = acc >= ins.K
			}
			if taken {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return ins.K, nil
		default:
			return 0, fmt.Errorf("instruction %d has code %#x", pc, ins.Code)
		}
	}
	return 0, fmt.Errorf("ran past the end")
}

// TestProgramVerdicts runs the filter for every x86-64 system call number
// (and beyond), x32 numbers and another ABI: exactly the denied calls and
// every call of the other ABIs are refused.
func TestProgramVerdicts(t *testing.T) {
	p := Program()
	denied := map[uint32]bool{}
	for _, nr := range Denied {
		denied[nr] = true
	}
	for nr := uint32(0); nr < 2048; nr++ {
		got, err := run(p, auditArchX8664, nr)
		if err != nil {
			t.Fatalf("nr %d: %v", nr, err)
		}
		want := retAllow
		if denied[nr] {
			want = retDeny
		}
		if got != want {
			t.Errorf("nr %d: verdict %#x, want %#x", nr, got, want)
		}
	}
	for _, nr := range []uint32{unix.SYS_READ, unix.SYS_KEYCTL} {
		if got, _ := run(p, auditArchX8664, nr|x32SyscallBit); got != retDeny {
			t.Errorf("x32 nr %d: verdict %#x, want deny", nr, got)
		}
		if got, _ := run(p, 0x40000003 /* i386 */, nr); got != retDeny {
			t.Errorf("i386 nr %d: verdict %#x, want deny", nr, got)
		}
	}
}

// TestProgramIsATree checks that the search is shallow: no number walks
// more than about log2(len(Denied)) splits plus one leaf.
func TestProgramIsATree(t *testing.T) {
	p := Program()
	longest := 0
	for nr := uint32(0); nr < 512; nr++ {
		steps, acc := 0, uint32(0)
		for pc := 0; pc < len(p); pc++ {
			steps++
			ins := p[pc]
			switch ins.Code {
			case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
				acc = map[uint32]uint32{offArch: auditArchX8664, offNr: nr}[ins.K]
			case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
				if acc == ins.K {
					pc += int(ins.Jt)
				} else {
					pc += int(ins.Jf)
				}
			case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
				if acc >= ins.K {
					pc += int(ins.Jt)
				} else {
					pc += int(ins.Jf)
				}
			case unix.BPF_RET | unix.BPF_K:
				pc = len(p)
			}
		}
		longest = max(longest, steps)
	}
	// 6 ABI instructions, ceil(log2(n/leafSize))+1 splits, a leaf of
	// leafSize compares and the return.
	limit := 6 + 1 + bits.Len(uint(len(Denied)/leafSize)) + 2*leafSize + 1
	if longest > limit {
		t.Errorf("longest walk is %d instructions (limit %d) in a program of %d", longest, limit, len(p))
	}
	if longest >= len(Denied) {
		t.Errorf("longest walk %d is not shorter than a flat list of %d", longest, len(Denied))
	}
}
