package container_test

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/berthhq/berth/internal/cli"
	"github.com/berthhq/berth/internal/ctinit"
	"github.com/berthhq/berth/internal/guest/container"
	"github.com/berthhq/berth/internal/guest/container/cttest"
)

// berthMain is the "berth" command of the scripts: the real CLI and daemon
// with the real container driver, whose helpers re-execute this test
// binary (TestMain hands those modes to cttest.Helper).
func berthMain() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }

// TestScripts drives real daemons and containers through the CLI:
// testdata/script/*.txtar.
func TestScripts(t *testing.T) {
	cttest.RequireRoot(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("BERTH_DATA_DIR", env.WorkDir+"/data")
			// The guests' id ranges must traverse the work dir.
			if err := os.Chmod(env.WorkDir, 0o711); err != nil {
				return err
			}
			_, err := cttest.WriteBusyboxTar(env.WorkDir)
			return err
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitdaemon": func(ts *testscript.TestScript, neg bool, args []string) {
				sock := ts.Getenv("BERTH_DATA_DIR") + "/berth.sock"
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					if c, err := net.Dial("unix", sock); err == nil {
						c.Close()
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				ts.Fatalf("daemon did not come up on %s", sock)
			},
			// before A B: in the last stdout, A matches before B.
			"before": func(ts *testscript.TestScript, neg bool, args []string) {
				out := ts.ReadFile("stdout")
				a := regexp.MustCompile(args[0]).FindStringIndex(out)
				b := regexp.MustCompile(args[1]).FindStringIndex(out)
				if a == nil || b == nil || a[0] > b[0] {
					ts.Fatalf("%q does not come before %q in:\n%s", args[0], args[1], out)
				}
			},
			// hostpids VAR ID: set VAR to the PID of container ID's init.
			"initpid": func(ts *testscript.TestScript, neg bool, args []string) {
				run, err := container.DefaultRunDir(ts.Getenv("BERTH_DATA_DIR"))
				ts.Check(err)
				b, err := os.ReadFile(filepath.Join(run, args[1]+".pid"))
				ts.Check(err)
				m := regexp.MustCompile(`"pid":(\d+)`).FindStringSubmatch(string(b))
				if m == nil {
					ts.Fatalf("no pid in %s", b)
				}
				ts.Setenv(args[0], strings.TrimSpace(m[1]))
			},
			// alive PID: the process exists and is not a zombie (negated:
			// it is gone within 60 seconds).
			"alive": func(ts *testscript.TestScript, neg bool, args []string) {
				pid, err := strconv.Atoi(args[0])
				ts.Check(err)
				deadline := time.Now().Add(60 * time.Second)
				for {
					st, err := ctinit.State(pid)
					alive := err == nil && st != 'Z'
					if alive != neg {
						return
					}
					if !neg || time.Now().After(deadline) {
						ts.Fatalf("process %d alive=%v", pid, alive)
					}
					time.Sleep(20 * time.Millisecond)
				}
			},
		},
	})
}
