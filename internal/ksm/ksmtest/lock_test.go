package ksmtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLockNamesHolder takes the lock twice (flock conflicts between two
// open file descriptions, even in one process): the second waits its
// bounded time and fails naming the lock file and the holder's PID; after
// the release it gets the lock at once.
func TestLockNamesHolder(t *testing.T) {
	old := LockPath
	LockPath = filepath.Join(t.TempDir(), "ksm.lock")
	t.Cleanup(func() { LockPath = old })

	unlock, err := LockWithin(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := os.ReadFile(LockPath)
	if !strings.HasPrefix(string(rec), strconv.Itoa(os.Getpid())+" ") {
		t.Errorf("lock file holds %q, want this PID %d first", rec, os.Getpid())
	}
	_, err = LockWithin(300 * time.Millisecond)
	if err == nil {
		t.Fatal("second lock succeeded while the first is held")
	}
	for _, want := range []string{LockPath, "pid " + strconv.Itoa(os.Getpid()), "BERTH_KSM_LOCK_WAIT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	unlock()
	unlock2, err := LockWithin(time.Second)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
	t.Setenv("BERTH_KSM_LOCK_WAIT", "soon")
	if _, err := Lock(); err == nil || !strings.Contains(err.Error(), "BERTH_KSM_LOCK_WAIT") {
		t.Errorf("bad BERTH_KSM_LOCK_WAIT: %v", err)
	}
}
