package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/store/storetest"
)

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string) store.Store {
		s, err := store.Open(filepath.Join(dir, "berth.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestBoltSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt takes an flock; a second handle in the same process must wait and
	// fail rather than share the file.
	if s2, err := store.Open(path); err == nil {
		s2.Close()
		t.Fatal("second Open of a held store succeeded; want a lock timeout error")
	}
}

// TestBoltPutBatch checks that PutBatch writes every object (replacing an
// existing one) with the digest Put would give, survives a reopen, and
// writes nothing when a key is invalid.
func TestBoltPutBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Put(ctx, "tasks/b", []byte("old"), store.Cond{}); err != nil {
		t.Fatal(err)
	}
	objs := []store.Object{{Key: "tasks/a", Value: []byte(`{"a":1}`)}, {Key: "tasks/b", Value: []byte("new")}}
	if err := s.PutBatch(ctx, objs); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBatch(ctx, []store.Object{{Key: "tasks/c", Value: []byte("x")}, {Key: "", Value: []byte("y")}}); err == nil {
		t.Error("PutBatch with an empty key succeeded")
	}
	s.Close()
	if s, err = store.Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, o := range objs {
		got, err := s.Get(ctx, o.Key)
		if err != nil || string(got.Value) != string(o.Value) || got.Digest != store.Digest(o.Value) {
			t.Errorf("Get(%s) = %+v, %v; want %q with its digest", o.Key, got, err, o.Value)
		}
	}
	if _, err := s.Get(ctx, "tasks/c"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("object of a failed batch: %v, want not found", err)
	}
}
