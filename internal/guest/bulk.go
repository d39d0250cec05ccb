package guest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthhq/berth/api"
)

// DefaultShutdownTimeout is StopAll's per-guest shutdown timeout when the
// caller passes none and the guest's Startup.Down is 0 (as in Proxmox).
const DefaultShutdownTimeout = 180 * time.Second

// StartAll starts guests one after the other in start order: with
// onlyOnboot, the onboot guests as StartOrder returns them (node boot);
// otherwise every guest, sorted the same way. Guests the driver reports as
// running or paused are skipped. After each guest it starts, StartAll
// waits the guest's Startup.Up seconds by calling sleep, which must return
// ctx's error if ctx ends first; nil means a real, cancellable sleep.
//
// A guest that fails to start is logged and the run goes on; the returned
// error names every failed guest and wraps the driver errors. When ctx is
// cancelled, StartAll returns at the next step with an error wrapping
// ctx.Err(). log may be nil.
func (r *Registry) StartAll(ctx context.Context, log Logger, onlyOnboot bool, sleep func(ctx context.Context, d time.Duration) error) error {
	return r.StartGuests(ctx, log, onlyOnboot, nil, sleep)
}

// StartGuests is StartAll limited to the guests whose IDs are in only (all
// guests when only is nil), as pvenode startall --vms does.
func (r *Registry) StartGuests(ctx context.Context, log Logger, onlyOnboot bool, only []int, sleep func(ctx context.Context, d time.Duration) error) error {
	if sleep == nil {
		sleep = sleepCtx
	}
	log = newSyncLogger(log)
	gs, err := r.List(ctx)
	if err != nil {
		return fmt.Errorf("start all guests: %w", err)
	}
	gs = selectIDs(gs, only)
	if onlyOnboot {
		gs = StartOrder(gs)
	} else {
		gs = sortedForStart(gs)
	}
	var res bulkResult
	for _, g := range gs {
		if err := ctx.Err(); err != nil {
			return res.err("start", err)
		}
		name := kindLabel(g.Kind) + " " + strconv.Itoa(g.ID)
		d, err := r.Driver(g.Kind)
		if err != nil {
			log.Printf("Starting %s failed: %v", name, err)
			res.fail(g.ID, name, err)
			continue
		}
		st, err := d.Status(ctx, g)
		if err != nil {
			err = fmt.Errorf("read status: %w", err)
			log.Printf("Starting %s failed: %v", name, err)
			res.fail(g.ID, name, err)
			continue
		}
		if st.Status == api.GuestRunning || st.Status == api.GuestPaused {
			log.Printf("%s is already %s, skipping", name, st.Status)
			continue
		}
		log.Printf("Starting %s", name)
		if err := d.Start(ctx, g, log); err != nil {
			log.Printf("Starting %s failed: %v", name, err)
			res.fail(g.ID, name, err)
			continue
		}
		if up := g.Startup.Up; up > 0 {
			log.Printf("Waiting %d seconds (startup delay of %s)", up, name)
			if err := sleep(ctx, time.Duration(up)*time.Second); err != nil {
				return res.err("start", err)
			}
		}
	}
	return res.err("start", ctx.Err())
}

// StopAll shuts every guest down in stop order (StopOrder), onboot or not.
// Guests are taken in groups of equal startup order: the guests of one
// group shut down in parallel and the next group begins when all of them
// have finished, so ordered dependencies stop after their dependents while
// unordered guests (which stop first) do not wait for each other.
//
// Each guest gets its Startup.Down seconds, or defaultTimeout when that is
// 0, or DefaultShutdownTimeout when both are 0, before the driver stops it
// hard. Guests the driver reports as stopped are skipped; a guest whose
// status cannot be read is shut down anyway. Failures are logged and do not
// stop the run; the returned error names every failed guest. When ctx is
// cancelled no further group is begun, the running shutdowns see the
// cancelled ctx, and StopAll returns an error wrapping ctx.Err(). log may
// be nil.
func (r *Registry) StopAll(ctx context.Context, log Logger, defaultTimeout time.Duration) error {
	return r.StopGuests(ctx, log, defaultTimeout, nil, true)
}

// StopGuests is StopAll limited to the guests whose IDs are in only (all
// when only is nil). With forceStop false (pvenode stopall --force-stop 0)
// a guest still running after its timeout is left running and reported
// as failed instead of being stopped hard: its driver's Shutdown gets a
// context that ends at the timeout.
func (r *Registry) StopGuests(ctx context.Context, log Logger, defaultTimeout time.Duration, only []int, forceStop bool) error {
	if defaultTimeout <= 0 {
		defaultTimeout = DefaultShutdownTimeout
	}
	log = newSyncLogger(log)
	gs, err := r.List(ctx)
	if err != nil {
		return fmt.Errorf("stop all guests: %w", err)
	}
	gs = StopOrder(selectIDs(gs, only))
	var res bulkResult
	for len(gs) > 0 {
		if err := ctx.Err(); err != nil {
			return res.err("stop", err)
		}
		n := 1
		for n < len(gs) && gs[n].Startup.Order == gs[0].Startup.Order {
			n++
		}
		group := gs[:n]
		gs = gs[n:]
		errs := make([]error, len(group))
		var wg sync.WaitGroup
		for i, g := range group {
			wg.Go(func() { errs[i] = r.shutdownOne(ctx, log, g, defaultTimeout, forceStop) })
		}
		wg.Wait()
		for i, g := range group {
			if errs[i] != nil {
				res.fail(g.ID, kindLabel(g.Kind)+" "+strconv.Itoa(g.ID), errs[i])
			}
		}
	}
	return res.err("stop", ctx.Err())
}

// shutdownOne is StopAll's work for one guest.
func (r *Registry) shutdownOne(ctx context.Context, log Logger, g api.Guest, def time.Duration, forceStop bool) error {
	name := kindLabel(g.Kind) + " " + strconv.Itoa(g.ID)
	d, err := r.Driver(g.Kind)
	if err != nil {
		log.Printf("Stopping %s failed: %v", name, err)
		return err
	}
	st, err := d.Status(ctx, g)
	switch {
	case err != nil:
		log.Printf("Cannot read status of %s (%v), shutting it down anyway", name, err)
	case st.Status == api.GuestStopped:
		log.Printf("%s is already stopped, skipping", name)
		return nil
	}
	timeout := def
	if g.Startup.Down > 0 {
		timeout = time.Duration(g.Startup.Down) * time.Second
	}
	log.Printf("Stopping %s (timeout = %d seconds)", name, int(timeout/time.Second))
	if !forceStop {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		// The driver's own hard stop comes after the context ends.
		err := d.Shutdown(sctx, g, timeout+time.Hour, log)
		if err != nil && sctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("still running after %d seconds, left running (force-stop 0)", int(timeout/time.Second))
		}
		if err != nil {
			log.Printf("Stopping %s failed: %v", name, err)
		}
		return err
	}
	if err := d.Shutdown(ctx, g, timeout, log); err != nil {
		log.Printf("Stopping %s failed: %v", name, err)
		return err
	}
	return nil
}

// selectIDs keeps the guests of gs whose IDs are in only; nil keeps all.
func selectIDs(gs []api.Guest, only []int) []api.Guest {
	if only == nil {
		return gs
	}
	want := make(map[int]bool, len(only))
	for _, id := range only {
		want[id] = true
	}
	var out []api.Guest
	for _, g := range gs {
		if want[g.ID] {
			out = append(out, g)
		}
	}
	return out
}

// bulkResult collects the failures of a bulk run.
type bulkResult struct {
	ids  []string
	errs []error
}

func (b *bulkResult) fail(id int, name string, err error) {
	b.ids = append(b.ids, strconv.Itoa(id))
	b.errs = append(b.errs, fmt.Errorf("%s: %w", name, err))
}

// err returns the run's error: the cancellation cause, if any, joined with
// a summary of the failed guests; nil when neither happened.
func (b *bulkResult) err(verb string, cause error) error {
	var out []error
	if cause != nil {
		out = append(out, fmt.Errorf("%s all guests interrupted: %w", verb, cause))
	}
	if len(b.ids) > 0 {
		out = append(out, fmt.Errorf("failed to %s guests %s: %w", verb, strings.Join(b.ids, ", "), errors.Join(b.errs...)))
	}
	return errors.Join(out...)
}

// sleepCtx sleeps for d or until ctx ends, returning ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// syncLogger serialises Printf calls so that parallel shutdowns (and the
// drivers they call) can share one Logger; a nil Logger discards.
type syncLogger struct {
	mu sync.Mutex
	l  Logger
}

func newSyncLogger(l Logger) Logger {
	if s, ok := l.(*syncLogger); ok {
		return s
	}
	return &syncLogger{l: l}
}

func (s *syncLogger) Printf(format string, args ...any) {
	if s.l == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.l.Printf(format, args...)
}
