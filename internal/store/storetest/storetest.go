// Package storetest is the conformance suite every store backend must pass.
// A backend's tests call Run with a constructor; the suite checks digests,
// conditional writes, listing order and durability across reopen.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/berthhq/berth/internal/store"
)

// Backend opens a store on dir; calling it twice with the same dir must
// reopen the same data (after the first was closed).
type Backend func(t *testing.T, dir string) store.Store

// Run runs the conformance suite against a backend.
func Run(t *testing.T, open Backend) {
	ctx := context.Background()
	t.Run("PutGet", func(t *testing.T) {
		s := open(t, t.TempDir())
		defer s.Close()
		obj, err := s.Put(ctx, "a/b", []byte(`{"x":1}`), store.Cond{})
		if err != nil {
			t.Fatal(err)
		}
		if obj.Digest != store.Digest([]byte(`{"x":1}`)) {
			t.Fatalf("digest %q is not the SHA-256 of the value", obj.Digest)
		}
		got, err := s.Get(ctx, "a/b")
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Value) != `{"x":1}` || got.Digest != obj.Digest || got.Key != "a/b" {
			t.Fatalf("Get = %+v, want the value just written", got)
		}
		if _, err := s.Get(ctx, "a/c"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("Conditions", func(t *testing.T) {
		s := open(t, t.TempDir())
		defer s.Close()
		first, err := s.Put(ctx, "k", []byte("1"), store.Cond{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, "k", []byte("x"), store.Cond{Create: true}); !errors.Is(err, store.ErrExists) {
			t.Fatalf("create over existing: err = %v, want ErrExists", err)
		}
		second, err := s.Put(ctx, "k", []byte("2"), store.Cond{Digest: first.Digest})
		if err != nil {
			t.Fatalf("update with current digest: %v", err)
		}
		if _, err := s.Put(ctx, "k", []byte("3"), store.Cond{Digest: first.Digest}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("update with stale digest: err = %v, want ErrConflict", err)
		}
		if err := s.Delete(ctx, "k", store.Cond{Digest: first.Digest}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("delete with stale digest: err = %v, want ErrConflict", err)
		}
		got, _ := s.Get(ctx, "k")
		if string(got.Value) != "2" || got.Digest != second.Digest {
			t.Fatalf("after refused writes the value is %q, want 2", got.Value)
		}
		if err := s.Delete(ctx, "k", store.Cond{Digest: second.Digest}); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "k", store.Cond{}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delete missing: err = %v, want ErrNotFound", err)
		}
		if _, err := s.Put(ctx, "k", []byte("x"), store.Cond{Digest: first.Digest}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("update missing with digest: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("InvalidKeys", func(t *testing.T) {
		s := open(t, t.TempDir())
		defer s.Close()
		for _, k := range []string{"", "/a", "a/", "a//b", "a/../b", ".", "a\x00b"} {
			if _, err := s.Put(ctx, k, []byte("x"), store.Cond{}); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("Put(%q): err = %v, want ErrInvalidKey", k, err)
			}
		}
	})
	t.Run("ListPrefixOrder", func(t *testing.T) {
		s := open(t, t.TempDir())
		defer s.Close()
		for _, k := range []string{"guests/000000102", "guests/000000101", "tasks/1", "guestsx/1"} {
			if _, err := s.Put(ctx, k, []byte(k), store.Cond{}); err != nil {
				t.Fatal(err)
			}
		}
		objs, err := s.List(ctx, "guests/")
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 2 || objs[0].Key != "guests/000000101" || objs[1].Key != "guests/000000102" {
			t.Fatalf("List(guests/) = %v, want the two guests in key order", keys(objs))
		}
	})
	t.Run("ConcurrentCreateOneWins", func(t *testing.T) {
		s := open(t, t.TempDir())
		defer s.Close()
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if _, err := s.Put(ctx, "guests/100", []byte(fmt.Sprint(i)), store.Cond{Create: true}); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d concurrent creates succeeded, want exactly 1", wins)
		}
	})
	t.Run("DurableAcrossReopen", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		obj, err := s.Put(ctx, "node/config", []byte(`{"d":1}`), store.Cond{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t, dir)
		defer s.Close()
		got, err := s.Get(ctx, "node/config")
		if err != nil || got.Digest != obj.Digest {
			t.Fatalf("after reopen: %+v, %v; want digest %s", got, err, obj.Digest)
		}
	})
}

func keys(objs []store.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}
