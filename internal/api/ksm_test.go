package api

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/store"
)

// pidDriver is a test fake of a guest driver that only reports PIDs: the
// adapter under test needs nothing else, and starting real VMs to learn
// their PIDs would test the drivers, not the mapping. Other methods panic
// (the embedded nil interface).
type pidDriver struct {
	guest.Driver
	pids map[int]int
}

func (d pidDriver) Kind() wire.GuestKind                  { return wire.GuestVM }
func (d pidDriver) Validate(wire.Guest) map[string]string { return nil }
func (d pidDriver) Status(_ context.Context, g wire.Guest) (guest.State, error) {
	switch pid := d.pids[g.ID]; pid {
	case -1:
		return guest.State{}, errors.New("monitor socket gone")
	case 0:
		return guest.State{Status: wire.GuestStopped}, nil
	default:
		return guest.State{Status: wire.GuestRunning, PID: pid}, nil
	}
}

func TestKSMGuests(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := guest.NewRegistry(st, pidDriver{pids: map[int]int{101: 4242, 102: 0, 103: -1, 104: 777}})
	for _, id := range []int{101, 102, 103, 104} {
		g := wire.Guest{ID: id, Kind: wire.GuestVM}
		if id == 104 {
			g.Config = map[string]string{"ksm": "0"}
		}
		if _, err := reg.Create(t.Context(), g); err != nil {
			t.Fatal(err)
		}
	}
	sv := &Services{Guests: reg}
	got, err := sv.KSMGuests(t.Context())
	want := []ksm.GuestProc{{ID: 101, Kind: wire.GuestVM, PID: 4242}, {ID: 104, Kind: wire.GuestVM, PID: 777, Choice: ksm.ChoiceOff}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if err == nil {
		t.Error("a guest whose status failed was not reported")
	}
}
