package cli_test

import (
	"net"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/ksm/ksmtest"
)

// TestKSMScript runs testdata/ksm against the host's real KSM. KSM is
// global host state, so it holds the host-wide KSM lock (no other KSM test
// runs meanwhile) and restores run, pages_to_scan and sleep_millisecs.
func TestKSMScript(t *testing.T) {
	if os.Getenv("BERTH_TEST_ROOT") != "1" {
		t.Skip("changes the host's KSM: set BERTH_TEST_ROOT=1 (make test does, as root)")
	}
	if !ksm.SysfsUnder("").Supported() {
		t.Skip("this kernel has no KSM (/sys/kernel/mm/ksm)")
	}
	// Lock first: a benchmark holding the lock may be running ksmtuned.
	unlock, err := ksmtest.Lock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	if pid, name := ksmtest.ForeignTuner(); pid != 0 {
		t.Fatalf("%s (pid %d) runs on this host and would change KSM under the test: stop it", name, pid)
	}
	restore, err := ksmtest.Save(ksm.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanup, not defer: testscript runs scripts as parallel subtests,
	// which finish after this function returns.
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Error(err)
		}
	})
	testscript.Run(t, testscript.Params{
		Dir: "testdata/ksm",
		Setup: func(env *testscript.Env) error {
			env.Setenv("BERTH_DATA_DIR", env.WorkDir+"/data")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitdaemon": func(ts *testscript.TestScript, neg bool, args []string) {
				sock := ts.Getenv("BERTH_DATA_DIR") + "/berth.sock"
				for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
					if c, err := net.Dial("unix", sock); err == nil {
						c.Close()
						return
					}
				}
				ts.Fatalf("daemon did not come up on %s", sock)
			},
			// until REGEXP CMD ARGS...: rerun CMD until its stdout matches (60 s).
			"until": func(ts *testscript.TestScript, neg bool, args []string) {
				re := regexp.MustCompile(args[0])
				for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
					if ts.Exec(args[1], args[2:]...) == nil && re.MatchString(ts.ReadFile("stdout")) {
						return
					}
				}
				ts.Fatalf("%v: stdout never matched %q; last stdout:\n%s", args[1:], args[0], ts.ReadFile("stdout"))
			},
		},
	})
}
