package guest

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
)

// mustCreate registers guests for bulk tests.
func mustCreate(t *testing.T, r *Registry, gs ...api.Guest) {
	t.Helper()
	for _, g := range gs {
		if _, err := r.Create(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStartAll(t *testing.T) {
	ctx := context.Background()
	ct, vm, uml := newFake(api.GuestContainer), newFake(api.GuestVM), newFake(api.GuestUML)
	r := newTestRegistry(t, ct, vm, uml)
	mustCreate(t, r,
		api.Guest{ID: 101, Kind: api.GuestContainer, OnBoot: true, Startup: api.Startup{Order: 2, Up: 10}},
		api.Guest{ID: 102, Kind: api.GuestVM, OnBoot: true, Startup: api.Startup{Order: 1, Up: 30}},
		api.Guest{ID: 103, Kind: api.GuestUML, OnBoot: true},
		api.Guest{ID: 104, Kind: api.GuestContainer, OnBoot: true, Startup: api.Startup{Up: 7}},     // already running
		api.Guest{ID: 105, Kind: api.GuestVM, OnBoot: true, Startup: api.Startup{Order: 3, Up: 99}}, // fails
		api.Guest{ID: 106, Kind: api.GuestContainer},                                                // not onboot
	)
	ct.status[104] = api.GuestRunning
	vm.failStart[105] = errBoom

	var slept []time.Duration
	sleep := func(ctx context.Context, d time.Duration) error {
		slept = append(slept, d)
		return nil
	}
	var log lines
	err := r.StartAll(ctx, &log, true, sleep)
	if err == nil {
		t.Fatal("StartAll succeeded despite a failing guest")
	}
	if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "failed to start guests 105") {
		t.Errorf("StartAll error = %v", err)
	}

	wantLog := []string{
		"Starting VM 102",
		"Waiting 30 seconds (startup delay of VM 102)",
		"Starting CT 101",
		"Waiting 10 seconds (startup delay of CT 101)",
		"Starting VM 105",
		"Starting VM 105 failed: boom",
		"Starting UML 103",
		"CT 104 is already running, skipping",
	}
	if got := log.get(); !reflect.DeepEqual(got, wantLog) {
		t.Errorf("log =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantLog, "\n"))
	}
	if want := []time.Duration{30 * time.Second, 10 * time.Second}; !reflect.DeepEqual(slept, want) {
		t.Errorf("sleeps = %v, want %v", slept, want)
	}
	if got, want := ct.opCalls("start"), []string{"start 101"}; !reflect.DeepEqual(got, want) {
		t.Errorf("CT starts = %v, want %v", got, want)
	}
	if got, want := vm.opCalls("start"), []string{"start 102", "start 105"}; !reflect.DeepEqual(got, want) {
		t.Errorf("VM starts = %v, want %v", got, want)
	}
	if got, want := uml.opCalls("start"), []string{"start 103"}; !reflect.DeepEqual(got, want) {
		t.Errorf("UML starts = %v, want %v", got, want)
	}

	// Without onlyOnboot, the non-onboot guest is started too, and the
	// ones now running are skipped.
	vm.failStart[105] = nil
	log = lines{}
	if err := r.StartAll(ctx, &log, false, sleep); err != nil {
		t.Fatalf("second StartAll = %v", err)
	}
	if got, want := ct.opCalls("start"), []string{"start 101", "start 106"}; !reflect.DeepEqual(got, want) {
		t.Errorf("CT starts = %v, want %v", got, want)
	}
	if got, want := vm.opCalls("start"), []string{"start 102", "start 105", "start 105"}; !reflect.DeepEqual(got, want) {
		t.Errorf("VM starts = %v, want %v", got, want)
	}
}

func TestStartAllStatusError(t *testing.T) {
	ct := newFake(api.GuestContainer)
	r := newTestRegistry(t, ct)
	mustCreate(t, r,
		api.Guest{ID: 101, Kind: api.GuestContainer, OnBoot: true},
		api.Guest{ID: 102, Kind: api.GuestContainer, OnBoot: true},
	)
	ct.statusErr[101] = errBoom
	err := r.StartAll(context.Background(), nil, true, nil)
	if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "guests 101") {
		t.Errorf("StartAll = %v", err)
	}
	if got, want := ct.opCalls("start"), []string{"start 102"}; !reflect.DeepEqual(got, want) {
		t.Errorf("starts = %v, want %v", got, want)
	}
}

func TestStartAllCancel(t *testing.T) {
	ct := newFake(api.GuestContainer)
	r := newTestRegistry(t, ct)
	mustCreate(t, r,
		api.Guest{ID: 101, Kind: api.GuestContainer, OnBoot: true, Startup: api.Startup{Order: 1, Up: 60}},
		api.Guest{ID: 102, Kind: api.GuestContainer, OnBoot: true, Startup: api.Startup{Order: 2}},
	)

	// Cancelled during the up-delay: the real sleep returns at once and
	// the next guest is not started.
	ctx, cancel := context.WithCancel(context.Background())
	var log lines
	done := make(chan error, 1)
	go func() { done <- r.StartAll(ctx, &log, true, nil) }()
	deadline := time.Now().Add(30 * time.Second)
	for len(ct.opCalls("start")) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("StartAll = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("StartAll did not return after cancel")
	}
	if got, want := ct.opCalls("start"), []string{"start 101"}; !reflect.DeepEqual(got, want) {
		t.Errorf("starts = %v, want %v", got, want)
	}

	// Already cancelled: nothing is started.
	if err := r.StartAll(ctx, nil, true, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("StartAll on cancelled ctx = %v", err)
	}
	if n := len(ct.opCalls("start")); n != 1 {
		t.Errorf("%d starts after cancel", n)
	}
}

func TestStopAll(t *testing.T) {
	ctx := context.Background()
	ct, vm := newFake(api.GuestContainer), newFake(api.GuestVM)
	r := newTestRegistry(t, ct, vm)
	mustCreate(t, r,
		api.Guest{ID: 101, Kind: api.GuestContainer, OnBoot: true, Startup: api.Startup{Order: 1, Down: 30}},
		api.Guest{ID: 102, Kind: api.GuestVM, OnBoot: true, Startup: api.Startup{Order: 2}},
		api.Guest{ID: 103, Kind: api.GuestContainer, Startup: api.Startup{Order: 2}},
		api.Guest{ID: 104, Kind: api.GuestVM},
		api.Guest{ID: 105, Kind: api.GuestContainer}, // stopped already
	)
	for _, id := range []int{101, 103} {
		ct.status[id] = api.GuestRunning
	}
	for _, id := range []int{102, 104} {
		vm.status[id] = api.GuestRunning
	}
	// Record the global order of shutdowns across both drivers.
	var order []int
	var mu sync.Mutex
	rec := func(ctx context.Context, g api.Guest) error {
		mu.Lock()
		order = append(order, g.ID)
		mu.Unlock()
		if g.ID == 102 {
			return errBoom
		}
		return nil
	}
	ct.onShutdown, vm.onShutdown = rec, rec

	var log lines
	err := r.StopAll(ctx, &log, 0)
	if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "failed to stop guests 102") {
		t.Errorf("StopAll = %v", err)
	}
	// Groups: unordered {104} (105 skipped), then order 2 {102,103} in
	// parallel, then order 1 {101}.
	if len(order) != 4 || order[0] != 104 || order[3] != 101 ||
		!(order[1] == 102 && order[2] == 103 || order[1] == 103 && order[2] == 102) {
		t.Errorf("shutdown order = %v, want 104, {102 103}, 101", order)
	}
	if got := ct.opCalls("shutdown"); len(got) != 2 {
		t.Errorf("CT shutdowns = %v (105 should be skipped)", got)
	}
	if ct.timeouts[101] != 30*time.Second || ct.timeouts[103] != DefaultShutdownTimeout || vm.timeouts[104] != DefaultShutdownTimeout {
		t.Errorf("timeouts CT %v VM %v", ct.timeouts, vm.timeouts)
	}
	logText := strings.Join(log.get(), "\n")
	for _, want := range []string{
		"Stopping VM 104 (timeout = 180 seconds)",
		"Stopping CT 101 (timeout = 30 seconds)",
		"CT 105 is already stopped, skipping",
		"Stopping VM 102 failed: boom",
	} {
		if !strings.Contains(logText, want) {
			t.Errorf("log lacks %q:\n%s", want, logText)
		}
	}

	// An explicit default replaces 180 seconds.
	vm.status[104] = api.GuestRunning
	if err := r.StopAll(ctx, nil, time.Minute); !errors.Is(err, errBoom) {
		t.Errorf("StopAll = %v", err)
	}
	if vm.timeouts[104] != time.Minute {
		t.Errorf("timeout = %v, want 1m", vm.timeouts[104])
	}
}

func TestStopAllCancel(t *testing.T) {
	ct := newFake(api.GuestContainer)
	r := newTestRegistry(t, ct)
	mustCreate(t, r,
		api.Guest{ID: 101, Kind: api.GuestContainer, Startup: api.Startup{Order: 1}},
		api.Guest{ID: 102, Kind: api.GuestContainer, Startup: api.Startup{Order: 2}},
	)
	ct.status[101], ct.status[102] = api.GuestRunning, api.GuestRunning
	started := make(chan struct{})
	ct.onShutdown = func(ctx context.Context, g api.Guest) error {
		close(started)
		<-ctx.Done() // a guest that ignores the shutdown request
		return ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.StopAll(ctx, nil, time.Hour) }()
	<-started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("StopAll = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("StopAll did not return after cancel")
	}
	if got, want := ct.opCalls("shutdown"), []string{"shutdown 102"}; !reflect.DeepEqual(got, want) {
		t.Errorf("shutdowns = %v, want %v", got, want)
	}
}
