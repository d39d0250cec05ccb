package hostnet

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/task"
)

// TestResumeAfterCrashMidApply: the daemon died after recording an apply
// and moving the new file into place but before the live change finished.
// At the next start, Resume rolls back: the old file comes back, the live
// state follows it, and the edit is kept in interfaces.new.
func TestResumeAfterCrashMidApply(t *testing.T) {
	n := newNS(t)
	n.nic("eno1")
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	tasks, err := task.NewManager(st, filepath.Join(dir, "tasks"), "testnode", log, task.Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "interfaces")
	old := readSeed(t, "bridged")
	neu := strings.Replace(old, "192.168.10.2/24", "192.168.77.2/24", 1)
	n.mustApply(dir, old, "")
	// The crash: new file in place, live half done (the new address
	// added, the old one still there), the record still "applying".
	os.WriteFile(path, []byte(neu), 0o644)
	n.ip("addr", "add", "192.168.77.2/24", "dev", "vmbr0")
	ctx := context.Background()
	if _, err := store.PutJSON(ctx, st, keyPending, pendingRecord{State: "applying", Prev: []byte(old), PrevApplied: []byte(old), New: []byte(neu), Staged: true}, store.Cond{}); err != nil {
		t.Fatal(err)
	}

	os.Setenv("BERTH_HOSTNET_HELPER", "1") // the helper is this test binary
	defer os.Unsetenv("BERTH_HOSTNET_HELPER")
	m := New(Options{Interfaces: path, NetNS: n.Name, Helper: []string{os.Args[0]}, Store: st, Tasks: tasks, Log: log})
	defer m.Close()
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, _, err := store.GetJSON[pendingRecord](ctx, st, keyPending)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rollback did not finish")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b, _ := os.ReadFile(path); string(b) != old {
		t.Errorf("active file after rollback:\n%s", b)
	}
	if b, _ := os.ReadFile(path + ".new"); string(b) != neu {
		t.Errorf("the rolled back edit was not kept in interfaces.new:\n%s", b)
	}
	addrs := n.live().Links["vmbr0"].Addrs
	var got []string
	for _, a := range addrs {
		got = append(got, a.String())
	}
	if s := strings.Join(got, " "); !strings.Contains(s, "192.168.10.2/24") || strings.Contains(s, "192.168.77.2") {
		t.Errorf("vmbr0 addresses after rollback: %s", s)
	}
}
