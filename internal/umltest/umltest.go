// Package umltest boots Debian's User Mode Linux kernel (package
// user-mode-linux) to run a shell script under a kernel that has what the
// host kernel lacks (bonding, 8021q, VLAN-filtering bridges …), for tests.
//
// The guest's root is the host's root through hostfs, mounted read-only,
// so host binaries (ip, busybox, a berth built by the test) run inside it
// unchanged and nothing on the host can be written. The script's output
// comes back as the console text. It is a test harness, not a guest
// driver: internal/guest/uml runs real UML guests.
package umltest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Options describe one boot.
type Options struct {
	// Kernel is the UML kernel; default "linux" on PATH.
	Kernel string
	// ModulesDir holds the kernel's modules and modules.dep; default the
	// one directory under /usr/lib/uml/modules.
	ModulesDir string
	// Modules are loaded (with their dependencies) before the script;
	// an entry may carry parameters: "bonding max_bonds=0".
	Modules []string
	// Script is run by /bin/sh as the guest's init, after /proc and /sys
	// are mounted and the modules loaded.
	Script string
	// Dir is a host directory for the init script and UML's files.
	Dir string
	// Mem is the guest's memory (default 256M).
	Mem string
	// Timeout bounds one boot (default 6 minutes: a loaded 2-core host
	// runs a UML guest many times slower than an idle one).
	Timeout time.Duration
}

// Markers the init script prints around the user script.
const (
	beginMarker = "UMLTEST-BEGIN"
	exitMarker  = "UMLTEST-EXIT "
)

// Result is what a boot produced.
type Result struct {
	// Output is what the script printed (between the markers).
	Output string
	// Exit is the script's exit status.
	Exit int
	// Console is the whole console log, kernel messages included.
	Console string
}

// ErrNoUML means the UML kernel is not installed.
var ErrNoUML = errors.New("User Mode Linux is not installed (Debian package user-mode-linux)")

// Run boots the kernel, runs the script and returns its output. A boot
// that dies before the script starts (seen under heavy host load: a crypto
// self-test times out and the boot fails) is retried once.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Kernel == "" {
		o.Kernel = "linux"
	}
	kernel, err := exec.LookPath(o.Kernel)
	if err != nil {
		return Result{}, ErrNoUML
	}
	if o.ModulesDir == "" {
		ds, _ := filepath.Glob("/usr/lib/uml/modules/*")
		if len(ds) != 1 {
			return Result{}, fmt.Errorf("want one UML modules directory under /usr/lib/uml/modules, found %d", len(ds))
		}
		o.ModulesDir = ds[0]
	}
	if o.Mem == "" {
		o.Mem = "256M"
	}
	if o.Timeout == 0 {
		o.Timeout = 6 * time.Minute
	}
	var names []string
	params := map[string]string{}
	for _, m := range o.Modules {
		n, p, _ := strings.Cut(m, " ")
		names = append(names, n)
		params[norm(n)] = p
	}
	loads, err := moduleOrder(o.ModulesDir, names)
	if err != nil {
		return Result{}, err
	}
	var init strings.Builder
	init.WriteString("#!/bin/sh\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\n")
	init.WriteString("mount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t tmpfs tmpfs /run\n")
	for _, m := range loads {
		fmt.Fprintf(&init, "busybox insmod %s %s || echo 'umltest: insmod %s failed'\n", m, params[norm(strings.TrimSuffix(filepath.Base(m), ".ko"))], filepath.Base(m))
	}
	fmt.Fprintf(&init, "echo %s\n( %s\n) 2>&1\necho \"%s$?\"\necho o > /proc/sysrq-trigger\nsleep 10\n", beginMarker, "\n"+o.Script, exitMarker)
	initPath := filepath.Join(o.Dir, "init.sh")
	if err := os.WriteFile(initPath, []byte(init.String()), 0o755); err != nil {
		return Result{}, err
	}
	var res Result
	for attempt := 1; attempt <= 2; attempt++ {
		res, err = boot(ctx, kernel, initPath, o, attempt)
		if err == nil || !errors.Is(err, errEarly) {
			return res, err
		}
	}
	return res, err
}

var errEarly = errors.New("UML died before the test script started")

func boot(ctx context.Context, kernel, initPath string, o Options, attempt int) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	umid := fmt.Sprintf("umltest%d-%d", os.Getpid(), attempt)
	cmd := exec.CommandContext(ctx, kernel,
		"mem="+o.Mem, "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro",
		"init="+initPath, "con=null", "con0=fd:0,fd:1", "loglevel=1",
		"umid="+umid, "uml_dir="+o.Dir)
	cmd.Env = append(os.Environ(), "TMPDIR="+o.Dir)
	cmd.Stdin = nil
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	console := strings.ReplaceAll(out.String(), "\r\n", "\n")
	res := Result{Console: console}
	b := strings.Index(console, beginMarker+"\n")
	if b < 0 {
		return res, fmt.Errorf("%w (attempt %d, %v); console:\n%s", errEarly, attempt, runErr, tail(console, 40))
	}
	rest := console[b+len(beginMarker)+1:]
	e := strings.LastIndex(rest, exitMarker)
	if e < 0 {
		return res, fmt.Errorf("the test script did not finish (%v); console:\n%s", runErr, tail(console, 60))
	}
	res.Output = rest[:e]
	fmt.Sscan(rest[e+len(exitMarker):], &res.Exit)
	return res, nil
}

func tail(s string, n int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// moduleOrder returns the .ko paths to insmod for the modules, each after
// its dependencies, from modules.dep.
func moduleOrder(dir string, mods []string) ([]string, error) {
	if len(mods) == 0 {
		return nil, nil
	}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("UML modules: %w", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	byName := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[k] = strings.Fields(v)
		name := strings.TrimSuffix(filepath.Base(k), ".ko")
		byName[norm(name)] = k
	}
	var out []string
	var add func(p string)
	add = func(p string) {
		if slices.Contains(out, p) {
			return
		}
		ds := deps[p]
		// modules.dep lists the deepest dependency last.
		for i := len(ds) - 1; i >= 0; i-- {
			add(ds[i])
		}
		out = append(out, p)
	}
	for _, m := range mods {
		p, ok := byName[norm(m)]
		if !ok {
			return nil, fmt.Errorf("UML module %s not found in %s", m, dir)
		}
		add(p)
	}
	for i := range out {
		out[i] = filepath.Join(dir, out[i])
	}
	return out, nil
}

var dash = regexp.MustCompile(`-`)

func norm(n string) string { return dash.ReplaceAllString(n, "_") }
