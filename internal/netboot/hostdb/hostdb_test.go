package hostdb

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

func openDB(t *testing.T) (*DB, store.Store) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db, err := Open(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return db, st
}

func TestCRUD(t *testing.T) {
	ctx := context.Background()
	db, st := openDB(t)
	h, err := db.Add(ctx, wire.NetbootHost{MAC: "52-54-00-AA-00-01", Name: "a", IP: "10.0.0.5", Options: map[string]string{"42": "10.0.0.1,10.0.0.2"}})
	if err != nil {
		t.Fatal(err)
	}
	if h.MAC != "52:54:00:aa:00:01" || h.Digest == "" {
		t.Fatalf("added %+v", h)
	}
	if _, err := db.Add(ctx, wire.NetbootHost{MAC: h.MAC}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second add: %v", err)
	}
	var ve *ValidationError
	if _, err := db.Add(ctx, wire.NetbootHost{MAC: "52:54:00:aa:00:02", IP: "10.0.0.5"}); !errors.As(err, &ve) || ve.Fields["ip"] == "" {
		t.Fatalf("duplicate address: %v", err)
	}
	if _, err := db.Add(ctx, wire.NetbootHost{MAC: "nope", IP: "1.2.3", Options: map[string]string{"53": "x"}}); !errors.As(err, &ve) || len(ve.Fields) != 3 {
		t.Fatalf("bad host: %v", err)
	}
	h.Name = "b"
	old := h.Digest
	if h, err = db.Set(ctx, h); err != nil {
		t.Fatal(err)
	}
	h.Digest = old
	if _, err := db.Set(ctx, h); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale digest: %v", err)
	}
	if got, ok := db.Lookup(net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 1}); !ok || got.Name != "b" {
		t.Fatalf("lookup %+v %v", got, ok)
	}
	// A new DB on the same store sees the same entries.
	db2, _ := Open(ctx, st)
	if got, ok := db2.Lookup(net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 1}); !ok || got.Name != "b" {
		t.Fatalf("reopened lookup %+v %v", got, ok)
	}
	if err := db.Remove(ctx, h.MAC, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := db.Lookup(net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 1}); ok {
		t.Fatal("removed host still found")
	}
	if err := db.Remove(ctx, h.MAC, ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
}

func TestImportAllOrNothing(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	if _, err := db.Add(ctx, wire.NetbootHost{MAC: "52:54:00:00:00:01", IP: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	_, _, err := db.Import(ctx, []wire.NetbootHost{{MAC: "52:54:00:00:00:02", IP: "10.0.0.2"}, {MAC: "52:54:00:00:00:03", IP: "10.0.0.1"}})
	if err == nil {
		t.Fatal("import with an address clash succeeded")
	}
	if len(db.Snapshot()) != 1 {
		t.Fatalf("a failed import wrote %d hosts", len(db.Snapshot())-1)
	}
	c, u, err := db.Import(ctx, []wire.NetbootHost{{MAC: "52:54:00:00:00:01", IP: "10.0.0.9"}, {MAC: "52:54:00:00:00:02", IP: "10.0.0.1"}})
	if err != nil || c != 1 || u != 1 {
		t.Fatalf("import: created %d updated %d: %v", c, u, err)
	}
}

func TestEncodeOption(t *testing.T) {
	for _, tt := range []struct {
		code, v string
		want    []byte
		ok      bool
	}{
		{"42", "10.0.0.1,10.0.0.2", []byte{10, 0, 0, 1, 10, 0, 0, 2}, true},
		{"150", "0x0a:0b", []byte{10, 11}, true},
		{"252", "http://x/wpad.dat", []byte("http://x/wpad.dat"), true},
		{"53", "1", nil, false},
		{"300", "x", nil, false},
		{"x", "x", nil, false},
		{"150", "0xzz", nil, false},
	} {
		got, err := EncodeOption(tt.code, tt.v)
		if (err == nil) != tt.ok || string(got) != string(tt.want) {
			t.Errorf("%s=%s: %v %v", tt.code, tt.v, got, err)
		}
	}
}
