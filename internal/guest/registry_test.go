package guest

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

func ptr[T any](v T) *T { return &v }

func TestRegistryCRUD(t *testing.T) {
	ctx := context.Background()
	ct, vm := newFake(api.GuestContainer), newFake(api.GuestVM)
	r := newTestRegistry(t, ct, vm)

	in := api.Guest{ID: 101, Kind: api.GuestContainer, Name: "web", OnBoot: true,
		Startup: api.Startup{Order: 1, Up: 5}, Config: map[string]string{"memory": "512"},
		Status: "running", Digest: "ignored"}
	created, err := r.Create(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if created.Digest == "" || created.Digest == "ignored" || created.Status != "" {
		t.Errorf("Create returned digest %q status %q", created.Digest, created.Status)
	}
	got, err := r.Get(ctx, 101)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, created) {
		t.Errorf("Get = %+v, want %+v", got, created)
	}

	// IDs sort numerically, not as strings.
	for _, id := range []int{1000, 99999, 200} {
		if _, err := r.Create(ctx, api.Guest{ID: id, Kind: api.GuestVM}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{101, 200, 1000, 99999}; !reflect.DeepEqual(ids(list), want) {
		t.Errorf("List IDs = %v, want %v", ids(list), want)
	}
	if !reflect.DeepEqual(list[0], created) {
		t.Errorf("List[0] = %+v, want %+v", list[0], created)
	}

	// Update with the current digest.
	up, err := r.Update(ctx, 101, api.GuestConfigUpdate{
		Name:    ptr("www"),
		OnBoot:  ptr(false),
		Startup: &api.Startup{Order: 2},
		Config:  map[string]string{"cores": "2"},
		Delete:  []string{"memory", "absent"},
		Digest:  created.Digest,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := api.Guest{ID: 101, Kind: api.GuestContainer, Name: "www", Startup: api.Startup{Order: 2},
		Config: map[string]string{"cores": "2"}, Digest: up.Digest}
	if !reflect.DeepEqual(up, want) {
		t.Errorf("Update = %+v, want %+v", up, want)
	}
	if up.Digest == created.Digest {
		t.Error("digest did not change")
	}

	// A stale digest is a conflict and writes nothing.
	_, err = r.Update(ctx, 101, api.GuestConfigUpdate{Name: ptr("stale"), Digest: created.Digest})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Update with stale digest = %v, want ErrConflict", err)
	}
	if !strings.Contains(err.Error(), "guest 101 was changed by someone else") {
		t.Errorf("conflict message = %q", err)
	}
	if g, _ := r.Get(ctx, 101); g.Name != "www" {
		t.Errorf("stale update was written: name %q", g.Name)
	}

	// Update without digest works on the latest version.
	if _, err := r.Update(ctx, 101, api.GuestConfigUpdate{Name: ptr("")}); err != nil {
		t.Fatal(err)
	}

	// Remove: stale digest, then the right one, then again.
	if err := r.Remove(ctx, 101, up.Digest); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Remove with stale digest = %v, want ErrConflict", err)
	}
	cur, _ := r.Get(ctx, 101)
	if err := r.Remove(ctx, 101, cur.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, 101); !errors.Is(err, store.ErrNotFound) || err.Error() != "guest 101 does not exist" {
		t.Errorf("Get after Remove = %v", err)
	}
	if err := r.Remove(ctx, 101, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
	if _, err := r.Update(ctx, 101, api.GuestConfigUpdate{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Update of removed guest = %v, want ErrNotFound", err)
	}
	if err := r.Remove(ctx, 200, ""); err != nil {
		t.Errorf("Remove without digest = %v", err)
	}
	// The registry never calls the driver for configuration changes.
	if c := ct.opCalls("create"); len(c) != 0 {
		t.Errorf("driver Create called: %v", c)
	}
}

func TestRegistryCreateDuplicate(t *testing.T) {
	ctx := context.Background()
	r := newTestRegistry(t, newFake(api.GuestContainer), newFake(api.GuestVM))
	if _, err := r.Create(ctx, api.Guest{ID: 101, Kind: api.GuestContainer, Name: "a"}); err != nil {
		t.Fatal(err)
	}
	_, err := r.Create(ctx, api.Guest{ID: 101, Kind: api.GuestVM, Name: "b"})
	if !errors.Is(err, store.ErrExists) || err.Error() != "guest 101 already exists" {
		t.Fatalf("duplicate Create = %v", err)
	}
	if g, _ := r.Get(ctx, 101); g.Kind != api.GuestContainer || g.Name != "a" {
		t.Errorf("duplicate overwrote the guest: %+v", g)
	}
}

func TestRegistryValidation(t *testing.T) {
	ctx := context.Background()
	ct := newFake(api.GuestContainer)
	ct.validate = func(g api.Guest) map[string]string {
		if g.Config["memory"] == "lots" {
			return map[string]string{"memory": "not a size"}
		}
		return nil
	}
	r := newTestRegistry(t, ct)

	tests := []struct {
		name string
		g    api.Guest
		want map[string]string // field -> substring of message
	}{
		{"id low", api.Guest{ID: 42, Kind: api.GuestContainer},
			map[string]string{"id": "guest ID 42 is out of range: use 100 to 999999999"}},
		{"id high", api.Guest{ID: 1e9, Kind: api.GuestContainer},
			map[string]string{"id": "out of range"}},
		{"no driver", api.Guest{ID: 101, Kind: api.GuestVM},
			map[string]string{"kind": `no driver for guest kind "vm" on this node (available: container)`}},
		{"unknown kind", api.Guest{ID: 101, Kind: "zone"},
			map[string]string{"kind": `"zone"`}},
		{"bad name", api.Guest{ID: 101, Kind: api.GuestContainer, Name: "bad_name!"},
			map[string]string{"name": "not a valid DNS name"}},
		{"bad startup", api.Guest{ID: 101, Kind: api.GuestContainer, Startup: api.Startup{Order: -1, Up: 1}},
			map[string]string{"startup": "order -1"}},
		{"driver field and bad key", api.Guest{ID: 101, Kind: api.GuestContainer,
			Config: map[string]string{"memory": "lots", "Bad Key": "x"}},
			map[string]string{"memory": "not a size", "Bad Key": "option names"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Create(ctx, tt.g)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Create = %v, want *ValidationError", err)
			}
			if len(ve.Fields) != len(tt.want) {
				t.Errorf("fields = %v, want keys of %v", ve.Fields, tt.want)
			}
			for f, sub := range tt.want {
				if !strings.Contains(ve.Fields[f], sub) {
					t.Errorf("field %q = %q, want it to contain %q", f, ve.Fields[f], sub)
				}
				if !strings.Contains(err.Error(), f+": ") {
					t.Errorf("message %q does not name field %q", err, f)
				}
			}
		})
	}
	if list, _ := r.List(ctx); len(list) != 0 {
		t.Errorf("invalid guests were stored: %v", ids(list))
	}

	// Updates are validated too, and set+delete of one key is refused.
	g, err := r.Create(ctx, api.Guest{ID: 101, Kind: api.GuestContainer})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []api.GuestConfigUpdate{
		{Config: map[string]string{"memory": "lots"}},
		{Config: map[string]string{"memory": "1"}, Delete: []string{"memory"}},
		{Startup: &api.Startup{Down: -1}},
		{Name: ptr("-x")},
	} {
		var ve *ValidationError
		if _, err := r.Update(ctx, 101, u); !errors.As(err, &ve) {
			t.Errorf("Update(%+v) = %v, want *ValidationError", u, err)
		}
	}
	if cur, _ := r.Get(ctx, 101); cur.Digest != g.Digest {
		t.Error("invalid update was written")
	}
}

func TestRegistryDriverAndStatus(t *testing.T) {
	ctx := context.Background()
	ct, uml := newFake(api.GuestContainer), newFake(api.GuestUML)
	r := newTestRegistry(t, uml, ct)
	if got := r.Kinds(); !reflect.DeepEqual(got, []api.GuestKind{api.GuestContainer, api.GuestUML}) {
		t.Errorf("Kinds = %v", got)
	}
	if d, err := r.Driver(api.GuestUML); err != nil || d != uml {
		t.Errorf("Driver(uml) = %v, %v", d, err)
	}
	if _, err := r.Driver(api.GuestVM); err == nil || !strings.Contains(err.Error(), "available: container, uml") {
		t.Errorf("Driver(vm) = %v", err)
	}
	ct.status[101] = api.GuestRunning
	ct.statusErr[102] = errBoom
	gs := []api.Guest{
		{ID: 101, Kind: api.GuestContainer},
		{ID: 102, Kind: api.GuestContainer},
		{ID: 103, Kind: api.GuestUML},
		{ID: 104, Kind: api.GuestVM},
	}
	r.FillStatus(ctx, gs)
	var got []string
	for _, g := range gs {
		got = append(got, g.Status)
	}
	if want := []string{"running", "unknown", "stopped", "unknown"}; !reflect.DeepEqual(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
}

func TestNewRegistryDuplicateKindPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	NewRegistry(nil, newFake(api.GuestVM), newFake(api.GuestVM))
}
