// Package ksmtest is a KSM workload for tests and benchmarks: a process
// that maps memory, fills it with pages that are identical across every
// workload process of the same seed, makes it mergeable (or not), and waits.
// It runs as `berth __ksm-workload` or inside a test binary re-executed
// with the BERTH_KSM_WORKLOAD environment variable.
package ksmtest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/ksm"
)

// How a workload marks its memory.
const (
	// MarkMadvise calls madvise(MADV_MERGEABLE) on the area, as QEMU
	// does for guest RAM.
	MarkMadvise = "madvise"
	// MarkProcess sets prctl(PR_SET_MEMORY_MERGE, 1) before mapping, as
	// a container driver does for a ksm=1 container.
	MarkProcess = "process"
	// MarkNone leaves the memory unmergeable, as for a ksm=0 guest.
	MarkNone = "none"
)

// Spec describes one workload process.
type Spec struct {
	// MiB is the size of the area.
	MiB int
	// Seed selects the content: processes with the same seed have the
	// same pages; within one process all pages differ.
	Seed uint32
	// Mark is MarkMadvise, MarkProcess or MarkNone.
	Mark string
}

// EnvVar names the environment variable that turns a test binary into a
// workload process (see MaybeRun).
const EnvVar = "BERTH_KSM_WORKLOAD"

// String is the text form: "mib=64,seed=1,mark=madvise".
func (s Spec) String() string {
	return fmt.Sprintf("mib=%d,seed=%d,mark=%s", s.MiB, s.Seed, s.Mark)
}

// ParseSpec parses the text form written by String.
func ParseSpec(text string) (Spec, error) {
	s := Spec{Mark: MarkMadvise}
	for part := range strings.SplitSeq(text, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return s, fmt.Errorf("workload spec %q: %q is not key=value", text, part)
		}
		switch k {
		case "mib":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1<<20 {
				return s, fmt.Errorf("workload spec: mib %q: want 1 to 1048576", v)
			}
			s.MiB = n
		case "seed":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return s, fmt.Errorf("workload spec: seed %q: want a 32-bit number", v)
			}
			s.Seed = uint32(n)
		case "mark":
			if v != MarkMadvise && v != MarkProcess && v != MarkNone {
				return s, fmt.Errorf("workload spec: mark %q: use madvise, process or none", v)
			}
			s.Mark = v
		default:
			return s, fmt.Errorf("workload spec: unknown key %q (mib, seed, mark)", k)
		}
	}
	if s.MiB == 0 {
		return s, errors.New("workload spec: mib is required")
	}
	return s, nil
}

// Pages returns the number of pages of a workload of spec.
func (s Spec) Pages() int { return s.MiB << 20 / os.Getpagesize() }

// Run maps and fills the area, prints "ready PAGES" to out and then blocks
// until in reaches EOF (the parent closed the pipe or exited).
func Run(s Spec, in io.Reader, out io.Writer) error {
	if s.Mark == MarkProcess {
		if err := ksm.SetProcessMerge(true); err != nil {
			return err
		}
		if on, err := ksm.ProcessMerge(); err != nil || !on {
			return fmt.Errorf("PR_GET_MEMORY_MERGE after setting it: %v, %v", on, err)
		}
	}
	ps := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, s.MiB<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("map %d MiB: %w", s.MiB, err)
	}
	defer unix.Munmap(mem)
	if s.Mark == MarkMadvise {
		if err := unix.Madvise(mem, unix.MADV_MERGEABLE); err != nil {
			return fmt.Errorf("madvise(MADV_MERGEABLE): %w", err)
		}
	}
	for p := 0; p < len(mem)/ps; p++ {
		v := uint64(s.Seed)<<32 | uint64(p) | 1<<63
		page := mem[p*ps : (p+1)*ps]
		for o := 0; o < ps; o += 8 {
			binary.LittleEndian.PutUint64(page[o:], v)
		}
	}
	fmt.Fprintf(out, "ready %d\n", len(mem)/ps)
	_, err = io.Copy(io.Discard, in)
	return err
}

// MaybeRun turns the current process into a workload when EnvVar is set,
// and exits; otherwise it returns. Test binaries call it from TestMain.
func MaybeRun() {
	text := os.Getenv(EnvVar)
	if text == "" {
		return
	}
	s, err := ParseSpec(text)
	if err == nil {
		err = Run(s, os.Stdin, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ksm workload:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Process is a running workload.
type Process struct {
	Spec  Spec
	Cmd   *exec.Cmd
	stdin io.WriteCloser
}

// PID returns the workload's process ID.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Stop ends the workload and waits for it.
func (p *Process) Stop() error {
	p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.Cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		p.Cmd.Process.Kill()
		return <-done
	}
}

// Start runs exe as a workload process of spec and returns once its memory
// is filled. The program must call MaybeRun at start (a test binary) or be
// berth (args "__ksm-workload SPEC").
func Start(ctx context.Context, s Spec, exe string, args ...string) (*Process, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), EnvVar+"="+s.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start workload: %w", err)
	}
	p := &Process{Spec: s, Cmd: cmd, stdin: stdin}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "ready ") {
			err = fmt.Errorf("workload said %q", line)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("workload %s did not get ready: %w", s, err)
	}
	return p, nil
}
