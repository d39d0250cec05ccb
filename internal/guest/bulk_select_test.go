package guest

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
)

func TestStartGuestsOnly(t *testing.T) {
	ct := newFake(api.GuestContainer)
	r := newTestRegistry(t, ct)
	mustCreate(t, r,
		api.Guest{ID: 101, Kind: api.GuestContainer, Startup: api.Startup{Order: 2}},
		api.Guest{ID: 102, Kind: api.GuestContainer, Startup: api.Startup{Order: 1}},
		api.Guest{ID: 103, Kind: api.GuestContainer},
	)
	if err := r.StartGuests(context.Background(), nil, false, []int{101, 102}, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := ct.opCalls("start"), []string{"start 102", "start 101"}; !reflect.DeepEqual(got, want) {
		t.Errorf("starts = %v, want %v (only the listed guests, in startup order)", got, want)
	}
}

func TestStopGuestsNoForceStop(t *testing.T) {
	ct := newFake(api.GuestContainer)
	r := newTestRegistry(t, ct)
	mustCreate(t, r,
		api.Guest{ID: 101, Kind: api.GuestContainer},
		api.Guest{ID: 102, Kind: api.GuestContainer, Startup: api.Startup{Down: 1}},
	)
	ct.status[101], ct.status[102] = api.GuestRunning, api.GuestRunning
	// 102 ignores the shutdown request until its context ends.
	ct.onShutdown = func(ctx context.Context, g api.Guest) error {
		if g.ID == 102 {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	var log lines
	start := time.Now()
	err := r.StopGuests(context.Background(), &log, time.Hour, []int{102}, false)
	if err == nil || !strings.Contains(err.Error(), "left running") {
		t.Fatalf("StopGuests = %v, want a 'left running' failure", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s: the guest's down=1 was not the limit", d)
	}
	if ct.status[102] != api.GuestRunning {
		t.Errorf("guest 102 is %s: force-stop 0 must leave it running", ct.status[102])
	}
	if got := ct.opCalls("shutdown"); !reflect.DeepEqual(got, []string{"shutdown 102"}) {
		t.Errorf("shutdowns = %v: 101 is not in the list", got)
	}
}
