package container_test

import (
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/internal/guest/container"
	"github.com/berthhq/berth/internal/syncbuf"
)

// TestStartPhasesLogged checks the debug log of a start and an exec: the
// driver's phases and, inside "init" and the exec's "wait", the stages
// the children recorded, in order and each measured. With the exec
// helper (the default) the first child confines itself before it spawns
// init, stays as the helper, and an exec is one spawn; without it
// (NoExecHelper) init confines itself, the first child exits and an exec
// forks through every join step.
func TestStartPhasesLogged(t *testing.T) {
	for _, tc := range []struct {
		name               string
		noHelper           bool
		id                 int
		startWant, runWant string
	}{
		{"helper", false, 170, "build fork cgroups userns unshare confine spawn root mounts net pivot exec", "fork setup cgroups exec run"},
		{"join", true, 171, "build fork cgroups userns unshare spawn root mounts net pivot confine exec exit reap", "build fork spawn cgroups setns confine exec exit run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var buf syncbuf.Buffer
			self, _ := os.Executable()
			d, err := container.New(container.Options{DataDir: e.dir, Store: e.st, Images: e.img, Self: self, NoExecHelper: tc.noHelper,
				Log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			e.d = d
			g := e.create(tc.id, nil)
			e.start(g)
			if out, code := e.run(g, "true"); code != 0 {
				t.Fatalf("exec: %d %s", code, out)
			}
			for _, c := range []struct{ op, step, want string }{
				{"start", "init", tc.startWant},
				{"exec", "wait", tc.runWant},
			} {
				line, keys := phaseLine(t, buf.String(), c.op)
				var stages []string
				for _, k := range keys {
					if s, ok := strings.CutPrefix(k, c.step+"/"); ok {
						stages = append(stages, s)
						if v, _ := line[k].(float64); v <= 0 || time.Duration(v) > time.Minute {
							t.Errorf("%s stage %s took %v", c.op, k, time.Duration(v))
						}
					}
				}
				if got := strings.Join(stages, " "); got != c.want {
					t.Errorf("%s stages %q, want %q", c.op, got, c.want)
				}
			}
		})
	}
}

// phaseLine returns the last "container OP phases" line of a JSON log and
// its keys in order.
func phaseLine(t *testing.T, log, op string) (map[string]any, []string) {
	t.Helper()
	var line map[string]any
	var keys []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `"container `+op+` phases"`) {
			continue
		}
		line, keys = nil, nil
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(strings.NewReader(l))
		if _, err := dec.Token(); err != nil {
			t.Fatal(err)
		}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k.(string))
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil {
		t.Fatalf("no %s phases in the debug log:\n%s", op, log)
	}
	return line, keys
}
