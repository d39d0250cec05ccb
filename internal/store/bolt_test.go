package store_test

import (
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
