package task_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/task"
)

// BenchmarkStartWait measures the task machinery around a trivial guest
// operation: Start (log file, index), the task's end and Wait, on a real
// bbolt store in a temporary directory.
func BenchmarkStartWait(b *testing.B) {
	dir := b.TempDir()
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	m, err := task.NewManager(st, filepath.Join(dir, "tasks"), "pve1", slog.New(slog.DiscardHandler), task.Options{MaxCount: 100000})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	ctx := context.Background()
	for b.Loop() {
		u, err := m.Start(task.Spec{Type: "vzstart", ID: "1000", User: "root@pam"}, func(ctx context.Context, l *task.Log) error {
			l.Println("starting")
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Wait(ctx, u.String()); err != nil {
			b.Fatal(err)
		}
	}
}
