package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
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

func TestBoltDeleteBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var objs []store.Object
	for _, k := range []string{"tasks/a", "tasks/b", "tasks/c", "tasks/d"} {
		o, err := s.Put(ctx, k, []byte("v-"+k), store.Cond{})
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	// b changed since it was read, d is gone: both are skipped.
	if _, err := s.Put(ctx, "tasks/b", []byte("changed"), store.Cond{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "tasks/d", store.Cond{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.DeleteBatch(ctx, objs[:4])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tasks/a", "tasks/c"}; !slices.Equal(got, want) {
		t.Errorf("DeleteBatch deleted %q, want %q", got, want)
	}
	if _, err := s.DeleteBatch(ctx, []store.Object{{Key: ""}}); err == nil {
		t.Error("DeleteBatch with an empty key succeeded")
	}
	s.Close()
	if s, err = store.Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	left, err := s.List(ctx, "tasks/")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Key != "tasks/b" || string(left[0].Value) != "changed" {
		t.Errorf("left after DeleteBatch: %+v, want only the changed tasks/b", left)
	}
}
