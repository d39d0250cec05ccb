package container_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/internal/guest/container"
)

// lockedBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStartPhasesLogged checks the debug log of a start: the driver's
// phases and, inside "init", the stages the setup's children recorded,
// in order and each measured.
func TestStartPhasesLogged(t *testing.T) {
	e := newEnv(t)
	var buf lockedBuffer
	self, _ := os.Executable()
	d, err := container.New(container.Options{DataDir: e.dir, Store: e.st, Images: e.img, Self: self,
		Log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	g := e.create(170, nil)
	e.start(g)
	var line map[string]any
	var keys []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if !strings.Contains(l, `"container start phases"`) {
			continue
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(strings.NewReader(l))
		dec.Token()
		for dec.More() {
			k, _ := dec.Token()
			keys = append(keys, k.(string))
			var skip json.RawMessage
			dec.Decode(&skip)
		}
	}
	if line == nil {
		t.Fatalf("no start phases in the debug log:\n%s", buf.String())
	}
	var stages []string
	for _, k := range keys {
		if s, ok := strings.CutPrefix(k, "init/"); ok {
			stages = append(stages, s)
			if v, _ := line[k].(float64); v <= 0 || time.Duration(v) > time.Minute {
				t.Errorf("stage %s took %v", k, time.Duration(v))
			}
		}
	}
	want := "build fork cgroups userns unshare spawn root mounts net pivot confine exec exit reap"
	if got := strings.Join(stages, " "); got != want {
		t.Errorf("init stages %q, want %q", got, want)
	}
}
