package api

import (
	"context"
	"net/http"
	"strconv"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/task"
)

// umlDriver is what the UML routes need beyond guest.Driver; the uml
// driver provides it.
type umlDriver interface {
	guest.Driver
	powerDriver
	UMLStatus(ctx context.Context, cfg wire.Guest) (wire.UMLStatus, error)
	Sysrq(ctx context.Context, cfg wire.Guest, key string) (string, error)
	Commit(ctx context.Context, cfg wire.Guest, disk, image string, log guest.Logger) error
}

func (sv *Services) umlRoutes() []Route {
	id := Param{Name: "id", In: "path", Type: "integer"}
	return []Route{
		{Method: "GET", Path: "/api/v1/umls/{id}/status", Summary: "A UML guest's run state, host user, kernel version (mconsole), CPU and memory use.",
			Role: wire.RoleAuditor, Params: []Param{id}, Resp: wire.UMLStatus{},
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.uml(r)
				if err != nil {
					return nil, err
				}
				return d.UMLStatus(r.Context(), g)
			}},
		{Method: "POST", Path: "/api/v1/umls/{id}/{action}", Summary: "Reboot, suspend (mconsole stop) or resume (mconsole go) a UML guest, as a task.",
			Role: wire.RoleOperator, Async: true,
			Params: []Param{id, {Name: "action", In: "path", Type: "string", Description: "reboot, suspend or resume"}},
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.uml(r)
				if err != nil {
					return nil, err
				}
				return sv.powerAction(r, g, d)
			}},
		{Method: "POST", Path: "/api/v1/umls/{id}/sysrq", Summary: "Send a magic SysRq key to a UML guest's kernel through mconsole and return its answer.",
			Role: wire.RoleOperator, Params: []Param{id}, Body: wire.UMLSysrqRequest{}, Resp: wire.UMLSysrqResponse{},
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.uml(r)
				if err != nil {
					return nil, err
				}
				var req wire.UMLSysrqRequest
				if err := r.Decode(&req); err != nil {
					return nil, err
				}
				out, err := d.Sysrq(r.Context(), g, req.Key)
				if err != nil {
					return nil, err
				}
				return wire.UMLSysrqResponse{Output: out}, nil
			}},
		{Method: "POST", Path: "/api/v1/umls/{id}/commit", Summary: "Merge a stopped UML guest's COW file into a new base image (uml_moo), as a task.",
			Role: wire.RoleOperator, Params: []Param{id}, Body: wire.UMLCommitRequest{}, Async: true,
			Handle: func(r *Request) (any, error) {
				g, d, err := sv.uml(r)
				if err != nil {
					return nil, err
				}
				var req wire.UMLCommitRequest
				if err := r.Decode(&req); err != nil {
					return nil, err
				}
				if req.Image == "" {
					return nil, Invalid("no image", map[string]string{"image": "name the new image file (an absolute path)"})
				}
				return sv.start(r, "umlcommit", strconv.Itoa(g.ID), func(ctx context.Context, l *task.Log) error {
					return d.Commit(ctx, g, req.Disk, req.Image, l)
				})
			}},
		{Method: "POST", Path: "/api/v1/umls/{id}/console", Summary: "Attach to a UML guest's main console: send 'Connection: Upgrade' and 'Upgrade: berth-console', then the connection carries the raw byte stream both ways.",
			Role: wire.RoleOperator, Params: []Param{id}, ContentType: "application/octet-stream",
			Stream: func(w http.ResponseWriter, r *Request) error { return sv.console(w, r, wire.GuestUML) }},
	}
}

// uml loads guest {id} and checks that it is a UML guest.
func (sv *Services) uml(r *Request) (wire.Guest, umlDriver, error) {
	g, d, err := sv.kindGuest(r, wire.GuestUML)
	if err != nil {
		return g, nil, err
	}
	ud, ok := d.(umlDriver)
	if !ok {
		return g, nil, &wire.Error{Status: http.StatusNotImplemented, Code: "not_supported", Message: "the UML driver on this node lacks UML operations"}
	}
	return g, ud, nil
}
