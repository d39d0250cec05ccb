package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/task"
)

// vmDriver is what the VM routes need beyond guest.Driver; the qemu
// driver provides it.
type vmDriver interface {
	guest.Driver
	VMStatus(ctx context.Context, cfg wire.Guest) (wire.VMStatus, error)
	Reboot(ctx context.Context, cfg wire.Guest, log guest.Logger) error
	Suspend(ctx context.Context, cfg wire.Guest, log guest.Logger) error
	Resume(ctx context.Context, cfg wire.Guest, log guest.Logger) error
	Snapshots(ctx context.Context, cfg wire.Guest) ([]wire.VMSnapshot, error)
	SnapshotCreate(ctx context.Context, cfg wire.Guest, name string, log guest.Logger) error
	SnapshotRollback(ctx context.Context, cfg wire.Guest, name string, log guest.Logger) error
	SnapshotDelete(ctx context.Context, cfg wire.Guest, name string, log guest.Logger) error
}

// powerDriver is the reboot/suspend/resume trio VMs and UML guests share.
type powerDriver interface {
	Reboot(ctx context.Context, cfg wire.Guest, log guest.Logger) error
	Suspend(ctx context.Context, cfg wire.Guest, log guest.Logger) error
	Resume(ctx context.Context, cfg wire.Guest, log guest.Logger) error
}

func (sv *Services) vmRoutes() []Route {
	id := Param{Name: "id", In: "path", Type: "integer"}
	snap := Param{Name: "name", In: "path", Type: "string"}
	return []Route{
		{Method: "GET", Path: "/api/v1/vms/{id}/status", Summary: "A VM's run state from QMP: running, paused or stopped, KVM or TCG, CPU and memory use.",
			Role: wire.RoleAuditor, Params: []Param{id}, Resp: wire.VMStatus{},
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.vm(r)
				if err != nil {
					return nil, err
				}
				return d.VMStatus(r.Context(), g)
			}},
		{Method: "POST", Path: "/api/v1/vms/{id}/{action}", Summary: "Reboot (reset), suspend (pause) or resume a running VM, as a task.",
			Role: wire.RoleOperator, Async: true,
			Params: []Param{id, {Name: "action", In: "path", Type: "string", Description: "reboot, suspend or resume"}},
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.vm(r)
				if err != nil {
					return nil, err
				}
				return sv.powerAction(r, g, d)
			}},
		{Method: "GET", Path: "/api/v1/vms/{id}/snapshots", Summary: "Snapshots on a VM's qcow2 disks.", Role: wire.RoleAuditor, Params: []Param{id}, Resp: []wire.VMSnapshot{},
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.vm(r)
				if err != nil {
					return nil, err
				}
				return d.Snapshots(r.Context(), g)
			}},
		{Method: "POST", Path: "/api/v1/vms/{id}/snapshots", Summary: "Snapshot every qcow2 disk (with RAM when the VM runs), as a task.",
			Role: wire.RoleOperator, Params: []Param{id}, Body: wire.VMSnapshotRequest{}, Async: true,
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.vm(r)
				if err != nil {
					return nil, err
				}
				var req wire.VMSnapshotRequest
				if err := r.Decode(&req); err != nil {
					return nil, err
				}
				if err := validSnapshot(req.Name); err != nil {
					return nil, err
				}
				return sv.start(r, "qmsnapshot", strconv.Itoa(g.ID), func(ctx context.Context, l *task.Log) error {
					return d.SnapshotCreate(ctx, g, req.Name, l)
				})
			}},
		{Method: "POST", Path: "/api/v1/vms/{id}/snapshots/{name}/rollback", Summary: "Return every qcow2 disk (and RAM, if saved) to a snapshot, as a task.",
			Role: wire.RoleOperator, Params: []Param{id, snap}, Async: true,
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.vm(r)
				if err != nil {
					return nil, err
				}
				name := r.PathValue("name")
				if err := validSnapshot(name); err != nil {
					return nil, err
				}
				return sv.start(r, "qmrollback", strconv.Itoa(g.ID), func(ctx context.Context, l *task.Log) error {
					return d.SnapshotRollback(ctx, g, name, l)
				})
			}},
		{Method: "DELETE", Path: "/api/v1/vms/{id}/snapshots/{name}", Summary: "Delete a snapshot from every qcow2 disk, as a task.",
			Role: wire.RoleOperator, Params: []Param{id, snap}, Async: true,
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.vm(r)
				if err != nil {
					return nil, err
				}
				name := r.PathValue("name")
				if err := validSnapshot(name); err != nil {
					return nil, err
				}
				return sv.start(r, "qmdelsnapshot", strconv.Itoa(g.ID), func(ctx context.Context, l *task.Log) error {
					return d.SnapshotDelete(ctx, g, name, l)
				})
			}},
		{Method: "POST", Path: "/api/v1/vms/{id}/console", Summary: "Attach to a VM's serial console: send 'Connection: Upgrade' and 'Upgrade: berth-console', then the connection carries the raw byte stream both ways.",
			Role: wire.RoleOperator, Params: []Param{id}, ContentType: "application/octet-stream",
			Stream: func(w http.ResponseWriter, r *Request) error { return sv.console(w, r, wire.GuestVM) }},
	}
}

func validSnapshot(name string) error {
	if name == "" || len(name) > 40 || strings.ContainsAny(name, " /,\\") {
		return Invalid("bad snapshot name", map[string]string{"name": fmt.Sprintf("%q: a snapshot name is a letter followed by up to 39 letters, digits, '_', '.' or '-'", name)})
	}
	return nil
}

// vm loads guest {id} and checks that it is a VM.
func (sv *Services) vm(r *Request) (wire.Guest, vmDriver, error) {
	g, d, err := sv.kindGuest(r, wire.GuestVM)
	if err != nil {
		return g, nil, err
	}
	vd, ok := d.(vmDriver)
	if !ok {
		return g, nil, &wire.Error{Status: http.StatusNotImplemented, Code: "not_supported", Message: "the VM driver on this node lacks VM operations"}
	}
	return g, vd, nil
}

func (sv *Services) kindGuest(r *Request, kind wire.GuestKind) (wire.Guest, guest.Driver, error) {
	g, err := sv.guest(r)
	if err != nil {
		return g, nil, err
	}
	if g.Kind != kind {
		return g, nil, Invalid("wrong guest kind", map[string]string{"id": fmt.Sprintf("guest %d is a %s, not a %s", g.ID, g.Kind, kind)})
	}
	d, err := sv.Guests.Driver(kind)
	return g, d, err
}

func (sv *Services) powerAction(r *Request, g wire.Guest, d powerDriver) (any, error) {
	action := r.PathValue("action")
	var fn task.Func
	switch action {
	case "reboot":
		fn = func(ctx context.Context, l *task.Log) error { return d.Reboot(ctx, g, l) }
	case "suspend":
		fn = func(ctx context.Context, l *task.Log) error { return d.Suspend(ctx, g, l) }
	case "resume":
		fn = func(ctx context.Context, l *task.Log) error { return d.Resume(ctx, g, l) }
	default:
		return nil, Invalid("unknown action", map[string]string{"action": fmt.Sprintf("%q: use reboot, suspend or resume", action)})
	}
	return sv.start(r, taskPrefix(g.Kind)+action, strconv.Itoa(g.ID), fn)
}

// ConsoleUpgrade is the Upgrade protocol name of console attachments.
const ConsoleUpgrade = wire.ConsoleUpgrade

// console hijacks the connection and copies bytes between it and the
// guest's console until either side closes.
func (sv *Services) console(w http.ResponseWriter, r *Request, kind wire.GuestKind) error {
	if !strings.EqualFold(r.Header.Get("Upgrade"), ConsoleUpgrade) {
		return &wire.Error{Status: http.StatusUpgradeRequired, Code: "upgrade_required", Message: "send 'Connection: Upgrade' and 'Upgrade: " + ConsoleUpgrade + "' to attach to a console (berth vm console ID does)"}
	}
	g, d, err := sv.kindGuest(r, kind)
	if err != nil {
		return err
	}
	con, err := d.Console(r.Context(), g)
	if err != nil {
		return &wire.Error{Status: http.StatusConflict, Code: "no_console", Message: err.Error()}
	}
	defer con.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Time{})
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", ConsoleUpgrade)
	if err := brw.Flush(); err != nil {
		return nil
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(con, brw); done <- struct{}{} }()
	go func() { io.Copy(conn, con); done <- struct{}{} }()
	<-done
	return nil
}
