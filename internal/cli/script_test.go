package cli_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/cli"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/vmtest"
)

// testDriver is a test fake for the "container" kind: the real container,
// VM and UML drivers arrive with their own issues, and the foundation's
// scripts only need a driver that records state so that create, startall
// with startup delays and destroy run through the real task and registry
// code. Its state lives in memory, so after a daemon restart every guest
// reads as stopped.
type testDriver struct {
	mu      sync.Mutex
	running map[int]bool
}

func (d *testDriver) Kind() wire.GuestKind { return wire.GuestContainer }
func (d *testDriver) Validate(cfg wire.Guest) map[string]string {
	if cfg.Config["fail"] == "validate" {
		return map[string]string{"fail": "asked to fail validation"}
	}
	return nil
}
func (d *testDriver) Create(ctx context.Context, cfg wire.Guest, log guest.Logger) error {
	if cfg.Config["fail"] == "create" {
		return fmt.Errorf("asked to fail creation")
	}
	log.Printf("test driver: created %d", cfg.ID)
	return nil
}
func (d *testDriver) set(id int, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running == nil {
		d.running = map[int]bool{}
	}
	d.running[id] = on
}
func (d *testDriver) Start(ctx context.Context, cfg wire.Guest, log guest.Logger) error {
	d.set(cfg.ID, true)
	return nil
}
func (d *testDriver) Shutdown(ctx context.Context, cfg wire.Guest, timeout time.Duration, log guest.Logger) error {
	d.set(cfg.ID, false)
	return nil
}
func (d *testDriver) Stop(ctx context.Context, cfg wire.Guest, log guest.Logger) error {
	d.set(cfg.ID, false)
	return nil
}
func (d *testDriver) Status(ctx context.Context, cfg wire.Guest) (guest.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running[cfg.ID] {
		return guest.State{Status: wire.GuestRunning}, nil
	}
	return guest.State{Status: wire.GuestStopped}, nil
}
func (d *testDriver) Destroy(ctx context.Context, cfg wire.Guest, log guest.Logger) error { return nil }
func (d *testDriver) Console(ctx context.Context, cfg wire.Guest) (io.ReadWriteCloser, error) {
	return nil, guest.ErrNotSupported
}
func (d *testDriver) Exec(ctx context.Context, cfg wire.Guest, req guest.ExecRequest) (int, error) {
	return 0, guest.ErrNotSupported
}
func (d *testDriver) Adopt(ctx context.Context, cfg wire.Guest) (guest.State, error) {
	return d.Status(ctx, cfg)
}

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"berth": func() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, &testDriver{})) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("BERTH_DATA_DIR", env.WorkDir+"/data")
			return nil
		},
		// [root]: root-only scripts (network namespaces) run when
		// BERTH_TEST_ROOT=1, as make test sets it as root.
		Condition: func(cond string) (bool, error) {
			if cond == "root" {
				return os.Getenv("BERTH_TEST_ROOT") == "1", nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// freeport VAR: set VAR to a free TCP port on 127.0.0.1.
			"freeport": func(ts *testscript.TestScript, neg bool, args []string) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				ts.Check(err)
				ts.Setenv(args[0], fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
				ln.Close()
			},
			// waitdaemon: wait until the daemon answers on its socket.
			"waitdaemon": func(ts *testscript.TestScript, neg bool, args []string) {
				sock := ts.Getenv("BERTH_DATA_DIR") + "/berth.sock"
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					if c, err := net.Dial("unix", sock); err == nil {
						c.Close()
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				ts.Fatalf("daemon did not come up on %s", sock)
			},
			// capture VAR REGEXP: set VAR to the first group of REGEXP in the last stdout.
			"capture": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: capture VAR REGEXP")
				}
				m := regexp.MustCompile(args[1]).FindStringSubmatch(ts.ReadFile("stdout"))
				if m == nil {
					ts.Fatalf("capture: %q not found in stdout", args[1])
				}
				ts.Setenv(args[0], strings.TrimSpace(m[1]))
			},
			// vmroot DIR [kernel]: write the VM/UML test root
			// (internal/vmtest; with "kernel", Debian's kernel and an
			// initramfs in /boot) as a tarball in DIR for berth image
			// import, and set ROOTTAR, UMLID and VMID to guest IDs and
			// NET to a test subnet (A.B.C), all unique to this process.
			"vmroot": func(ts *testscript.TestScript, neg bool, args []string) {
				os.MkdirAll(args[0], 0o755)
				tarball, err := vmtest.RootTar(args[0], len(args) > 1 && args[1] == "kernel")
				ts.Check(err)
				// A failing script leaves its guests running: kill every
				// process whose command line names this script's work
				// directory.
				work := ts.Getenv("WORK")
				ts.Defer(func() { vmtest.KillUnder(work) })
				ts.Setenv("ROOTTAR", tarball)
				// Guest IDs name the guests' taps: unique per test
				// process, so that runs at once do not collide.
				ts.Setenv("UMLID", strconv.Itoa(vmtest.GuestID(1)))
				ts.Setenv("VMID", strconv.Itoa(vmtest.GuestID(2)))
				ts.Setenv("NET", vmtest.Subnet(9))
			},
			// testbridge VAR CIDR: create a uniquely named bridge with
			// the host address CIDR, name it in VAR, delete it at the end.
			"testbridge": func(ts *testscript.TestScript, neg bool, args []string) {
				name := fmt.Sprintf("bts%d", os.Getpid()%100000)
				del, err := vmtest.Bridge(name, args[1])
				ts.Check(err)
				ts.Defer(del)
				ts.Setenv(args[0], name)
			},
			// until REGEXP CMD ARGS...: rerun a command until its stdout matches (up to 20s).
			"until": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 2 {
					ts.Fatalf("usage: until REGEXP CMD [ARGS...]")
				}
				re := regexp.MustCompile(args[0])
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					if ts.Exec(args[1], args[2:]...) == nil && re.MatchString(ts.ReadFile("stdout")) {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				ts.Fatalf("%v: stdout never matched %q; last stdout:\n%s", args[1:], args[0], ts.ReadFile("stdout"))
			},
		},
	})
}
