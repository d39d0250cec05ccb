package api

import (
	"context"
	"errors"
	"net/http"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/task"
)

func (sv *Services) ksmRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/v1/node/ksm", Summary: "KSM state: counters, memory saved, mode, the tuner's last decision, and processes (guests first) with merged pages.", Role: wire.RoleAuditor, Resp: wire.KSMStatus{},
			Handle: func(r *Request) (any, error) {
				if err := sv.ksmReady(); err != nil {
					return nil, err
				}
				return sv.KSM.Status(r.Context())
			}},
		{Method: "POST", Path: "/api/v1/node/ksm/enable", Summary: "Set KSM mode on and start merging now, as a task; the tuner then only adapts the speed.", Role: wire.RoleAdmin, Async: true,
			Handle: func(r *Request) (any, error) {
				if err := sv.ksmSupported(); err != nil {
					return nil, err
				}
				return sv.start(r, "ksmenable", "", func(ctx context.Context, l *task.Log) error { return sv.KSM.Enable(ctx, l) })
			}},
		{Method: "POST", Path: "/api/v1/node/ksm/disable", Summary: "Set KSM mode off and stop merging (optionally unmerging every page), as a task; the tuner leaves KSM alone.", Role: wire.RoleAdmin, Body: wire.KSMDisableRequest{}, Async: true,
			Handle: func(r *Request) (any, error) {
				var in wire.KSMDisableRequest
				if r.ContentLength != 0 {
					if err := r.Decode(&in); err != nil {
						return nil, err
					}
				}
				if err := sv.ksmSupported(); err != nil {
					return nil, err
				}
				typ := "ksmdisable"
				if in.Unmerge {
					typ = "ksmunmerge"
				}
				return sv.start(r, typ, "", func(ctx context.Context, l *task.Log) error { return sv.KSM.Disable(ctx, l, in.Unmerge) })
			}},
		{Method: "POST", Path: "/api/v1/node/ksm/unmerge", Summary: "Stop KSM and split every merged page again (run=2), as a task; sets the mode off so the tuner does not merge again.", Role: wire.RoleAdmin, Async: true,
			Handle: func(r *Request) (any, error) {
				if err := sv.ksmSupported(); err != nil {
					return nil, err
				}
				return sv.start(r, "ksmunmerge", "", func(ctx context.Context, l *task.Log) error { return sv.KSM.Disable(ctx, l, true) })
			}},
		{Method: "GET", Path: "/api/v1/node/ksm/config", Summary: "KSM mode and tuner configuration with its digest (defaults until set).", Role: wire.RoleAuditor, Resp: wire.KSMConfig{},
			Handle: func(r *Request) (any, error) {
				if err := sv.ksmReady(); err != nil {
					return nil, err
				}
				return sv.KSM.Config(r.Context())
			}},
		{Method: "PUT", Path: "/api/v1/node/ksm/config", Summary: "Change the KSM mode or tuner settings; a stale digest gets 409. The tuner applies it at once.", Role: wire.RoleAdmin, Body: wire.KSMConfigUpdate{}, Resp: wire.KSMConfig{},
			Handle: func(r *Request) (any, error) {
				var u wire.KSMConfigUpdate
				if err := r.Decode(&u); err != nil {
					return nil, err
				}
				if err := sv.ksmReady(); err != nil {
					return nil, err
				}
				return sv.KSM.SetConfig(r.Context(), u)
			}},
	}
}

// ksmReady fails when the daemon runs without KSM control.
func (sv *Services) ksmReady() error {
	if sv.KSM == nil {
		return &wire.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "KSM control is not set up in this daemon"}
	}
	return nil
}

// ksmSupported fails when KSM cannot be changed on this host.
func (sv *Services) ksmSupported() error {
	if err := sv.ksmReady(); err != nil {
		return err
	}
	if !sv.KSM.Sysfs().Supported() {
		return Invalid(ksm.ErrUnsupported.Error(), nil)
	}
	return nil
}

// KSMGuests lists the running guests' main processes for KSM status and
// the tuner's committed-memory figure.
func (sv *Services) KSMGuests(ctx context.Context) ([]ksm.GuestProc, error) {
	gs, err := sv.Guests.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []ksm.GuestProc
	var errs []error
	for _, g := range gs {
		st, err := sv.Guests.Status(ctx, g)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.PID > 0 {
			choice, _ := ksm.GuestChoice(g)
			out = append(out, ksm.GuestProc{ID: g.ID, Kind: g.Kind, PID: st.PID, Choice: choice})
		}
	}
	return out, errors.Join(errs...)
}
