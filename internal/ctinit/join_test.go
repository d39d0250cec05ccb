package ctinit

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestJoinSelf runs commands through Join in this test process's own
// namespaces (as a privileged container: no user namespace to enter),
// checking exit codes, signals, PATH lookup, a failing setup step and
// cancellation.
func TestJoinSelf(t *testing.T) {
	if os.Getenv("BERTH_TEST_ROOT") != "1" || os.Geteuid() != 0 {
		t.Skip("needs root and BERTH_TEST_ROOT=1: joins namespaces")
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	stdio := [3]int{int(null.Fd()), int(out.Fd()), int(out.Fd())}
	for _, tc := range []struct {
		name    string
		argv    []string
		cwd     string
		code    int
		errPart string
		outPart string
	}{
		{name: "exit code", argv: []string{"sh", "-c", "exit 3"}, code: 3},
		{name: "environment and cwd", argv: []string{"sh", "-c", "echo $container $PWD"}, cwd: "/tmp", outPart: "berth /tmp"},
		{name: "killed", argv: []string{"sh", "-c", "kill -9 $$"}, code: 128 + 9},
		{name: "not found", argv: []string{"no-such-command-berth"}, code: 127, outPart: "command not found"},
		{name: "not executable", argv: []string{"/etc/passwd"}, code: 126, outPart: "cannot execute"},
		{name: "failed step", argv: []string{"true"}, cwd: "/no/such/dir", errPart: "change to /no/such/dir: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out.Truncate(0)
			out.Seek(0, 0)
			code, err := Join(context.Background(), JoinSpec{PID: os.Getpid(), Privileged: true, Argv: tc.argv, Cwd: tc.cwd, Stdio: stdio})
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("error %v, want one with %q", err, tc.errPart)
				}
				return
			}
			if err != nil || code != tc.code {
				t.Fatalf("Join = %d, %v; want %d", code, err, tc.code)
			}
			b, _ := os.ReadFile(out.Name())
			if !strings.Contains(string(b), tc.outPart) {
				t.Errorf("output %q lacks %q", b, tc.outPart)
			}
		})
	}
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		code, err := Join(ctx, JoinSpec{PID: os.Getpid(), Privileged: true, Argv: []string{"sleep", "30"}, Stdio: stdio})
		if err != nil || code != 128+9 || time.Since(start) > 10*time.Second {
			t.Errorf("cancelled sleep: %d, %v after %s; want 137 at once", code, err, time.Since(start))
		}
	})
}

// TestChildEntryOffset checks the layout clone_amd64.s relies on: the
// child reads childMain's entry at offset 32 of childArgs.
func TestChildEntryOffset(t *testing.T) {
	if off := unsafe.Offsetof(childArgs{}.entry); off != 32 {
		t.Fatalf("childArgs.entry at offset %d; clone_amd64.s reads 32", off)
	}
	if childMainPC == 0 {
		t.Fatal("no entry address for childMain")
	}
}
