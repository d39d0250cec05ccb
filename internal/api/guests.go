package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/task"
)

func (sv *Services) guestRoutes() []Route {
	id := Param{Name: "id", In: "path", Type: "integer"}
	return []Route{
		{Method: "GET", Path: "/api/v1/guests", Summary: "List guests of every kind with their run state.", Role: wire.RoleAuditor, Resp: []wire.Guest{},
			Handle: func(r *Request) (any, error) {
				gs, err := sv.Guests.List(r.Context())
				if err != nil {
					return nil, err
				}
				sv.Guests.FillStatus(r.Context(), gs)
				return gs, nil
			}},
		{Method: "GET", Path: "/api/v1/guests/{id}", Summary: "One guest's configuration, digest and run state.", Role: wire.RoleAuditor, Params: []Param{id}, Resp: wire.Guest{},
			Handle: func(r *Request) (any, error) {
				g, err := sv.guest(r)
				if err != nil {
					return nil, err
				}
				gs := []wire.Guest{g}
				sv.Guests.FillStatus(r.Context(), gs)
				return gs[0], nil
			}},
		{Method: "POST", Path: "/api/v1/guests", Summary: "Create a guest (the ID is reserved at once; the driver's work runs as a task).", Role: wire.RoleOperator, Body: wire.Guest{}, Async: true,
			Handle: sv.createGuest},
		{Method: "PUT", Path: "/api/v1/guests/{id}/config", Summary: "Change a guest's configuration; a stale digest gets 409.", Role: wire.RoleOperator, Params: []Param{id}, Body: wire.GuestConfigUpdate{}, Resp: wire.Guest{},
			Handle: func(r *Request) (any, error) {
				n, err := guestID(r)
				if err != nil {
					return nil, err
				}
				var u wire.GuestConfigUpdate
				if err := r.Decode(&u); err != nil {
					return nil, err
				}
				return sv.Guests.Update(r.Context(), n, u)
			}},
		{Method: "POST", Path: "/api/v1/guests/{id}/status/{action}", Summary: "Start, shut down (clean, with timeout query in seconds) or stop (hard) a guest, as a task.",
			Role: wire.RoleOperator, Async: true,
			Params: []Param{id, {Name: "action", In: "path", Type: "string", Description: "start, shutdown or stop"},
				{Name: "timeout", In: "query", Type: "integer", Description: "shutdown: seconds before a hard stop"}},
			Handle: sv.guestAction},
		{Method: "DELETE", Path: "/api/v1/guests/{id}", Summary: "Destroy a stopped guest and its configuration, as a task.", Role: wire.RoleOperator, Params: []Param{id}, Async: true,
			Handle: sv.destroyGuest},
	}
}

func guestID(r *Request) (int, error) {
	n, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		return 0, Invalid("bad guest ID", map[string]string{"id": fmt.Sprintf("%q is not a number", r.PathValue("id"))})
	}
	return n, nil
}

func (sv *Services) guest(r *Request) (wire.Guest, error) {
	n, err := guestID(r)
	if err != nil {
		return wire.Guest{}, err
	}
	return sv.Guests.Get(r.Context(), n)
}

// taskPrefix gives Proxmox's task type prefix per guest kind.
func taskPrefix(k wire.GuestKind) string {
	switch k {
	case wire.GuestContainer:
		return "vz"
	case wire.GuestVM:
		return "qm"
	}
	return string(k)
}

func (sv *Services) createGuest(r *Request) (any, error) {
	var g wire.Guest
	if err := r.Decode(&g); err != nil {
		return nil, err
	}
	created, err := sv.Guests.Create(r.Context(), g)
	if err != nil {
		return nil, err
	}
	d, err := sv.Guests.Driver(created.Kind)
	if err != nil {
		return nil, err
	}
	return sv.start(r, taskPrefix(created.Kind)+"create", strconv.Itoa(created.ID), func(ctx context.Context, l *task.Log) error {
		l.Printf("creating %s %d", created.Kind, created.ID)
		if err := d.Create(ctx, created, l); err != nil {
			l.Printf("create failed, removing the configuration of guest %d", created.ID)
			// Clean up with a fresh context: the task's may be cancelled.
			if rmErr := sv.Guests.Remove(context.WithoutCancel(ctx), created.ID, ""); rmErr != nil {
				l.Printf("cleanup: %v", rmErr)
			}
			return err
		}
		return nil
	})
}

func (sv *Services) guestAction(r *Request) (any, error) {
	g, err := sv.guest(r)
	if err != nil {
		return nil, err
	}
	d, err := sv.Guests.Driver(g.Kind)
	if err != nil {
		return nil, err
	}
	timeout, err := r.QueryInt("timeout", 0)
	if err != nil {
		return nil, err
	}
	action := r.PathValue("action")
	var fn task.Func
	switch action {
	case "start":
		fn = func(ctx context.Context, l *task.Log) error { return d.Start(ctx, g, l) }
	case "stop":
		fn = func(ctx context.Context, l *task.Log) error { return d.Stop(ctx, g, l) }
	case "shutdown":
		to := guest.DefaultShutdownTimeout
		if g.Startup.Down > 0 {
			to = time.Duration(g.Startup.Down) * time.Second
		}
		if timeout > 0 {
			to = time.Duration(timeout) * time.Second
		}
		fn = func(ctx context.Context, l *task.Log) error { return d.Shutdown(ctx, g, to, l) }
	default:
		return nil, Invalid("unknown action", map[string]string{"action": fmt.Sprintf("%q: use start, shutdown or stop", action)})
	}
	return sv.start(r, taskPrefix(g.Kind)+action, strconv.Itoa(g.ID), fn)
}

func (sv *Services) destroyGuest(r *Request) (any, error) {
	g, err := sv.guest(r)
	if err != nil {
		return nil, err
	}
	d, err := sv.Guests.Driver(g.Kind)
	if err != nil {
		return nil, err
	}
	st, err := d.Status(r.Context(), g)
	if err == nil && st.Status != wire.GuestStopped {
		return nil, &wire.Error{Status: 409, Code: "running", Message: fmt.Sprintf("guest %d is %s: stop it first", g.ID, st.Status)}
	}
	return sv.start(r, taskPrefix(g.Kind)+"destroy", strconv.Itoa(g.ID), func(ctx context.Context, l *task.Log) error {
		if err := d.Destroy(ctx, g, l); err != nil && !errors.Is(err, guest.ErrNotSupported) {
			return err
		}
		return sv.Guests.Remove(ctx, g.ID, "")
	})
}
