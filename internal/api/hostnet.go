package api

import (
	"net/http"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/hostnet"
)

// DefaultRollbackAfter is the rollback deadline of applies over HTTPS that
// name none: a remote admin who locks themselves out gets the old network
// back.
const DefaultRollbackAfter = 60 * time.Second

var errNoHostNet = &wire.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "host network management is not enabled in this daemon"}

func (sv *Services) hostnetRoutes() []Route {
	nameParam := []Param{{Name: "name", In: "path", Type: "string", Description: "interface name (vmbr0, bond0, eno1.50 …)"}}
	return []Route{
		{Method: "GET", Path: "/api/v1/node/network", Summary: "Network interfaces of /etc/network/interfaces (of interfaces.new when changes are staged), digests, pending rollback.", Role: wire.RoleAuditor, Resp: wire.NetworkConfig{},
			Handle: func(r *Request) (any, error) {
				if sv.HostNet == nil {
					return nil, errNoHostNet
				}
				return sv.HostNet.Get(r.Context())
			}},
		{Method: "GET", Path: "/api/v1/node/network/diff", Summary: "Unified diff of the staged changes (interfaces → interfaces.new).", Role: wire.RoleAuditor, Resp: wire.NetworkDiff{},
			Handle: func(r *Request) (any, error) {
				if sv.HostNet == nil {
					return nil, errNoHostNet
				}
				d, err := sv.HostNet.Diff(r.Context())
				return wire.NetworkDiff{Diff: d}, err
			}},
		{Method: "POST", Path: "/api/v1/node/network/interfaces", Summary: "Stage a new interface in interfaces.new (validated with the whole file).", Role: wire.RoleAdmin, Body: wire.NetworkInterfaceSpec{}, Resp: wire.NetworkConfig{},
			Handle: func(r *Request) (any, error) {
				var spec wire.NetworkInterfaceSpec
				if err := r.Decode(&spec); err != nil {
					return nil, err
				}
				if sv.HostNet == nil {
					return nil, errNoHostNet
				}
				return sv.HostNet.Edit(r.Context(), spec.Digest, hostnet.EditFunc(spec.Name, spec, true))
			}},
		{Method: "PUT", Path: "/api/v1/node/network/interfaces/{name}", Summary: "Stage a change to an interface; options left out stay, 'delete' removes options.", Role: wire.RoleAdmin, Params: nameParam, Body: wire.NetworkInterfaceSpec{}, Resp: wire.NetworkConfig{},
			Handle: func(r *Request) (any, error) {
				var spec wire.NetworkInterfaceSpec
				if err := r.Decode(&spec); err != nil {
					return nil, err
				}
				if sv.HostNet == nil {
					return nil, errNoHostNet
				}
				return sv.HostNet.Edit(r.Context(), spec.Digest, hostnet.EditFunc(r.PathValue("name"), spec, false))
			}},
		{Method: "DELETE", Path: "/api/v1/node/network/interfaces/{name}", Summary: "Stage the removal of an interface.", Role: wire.RoleAdmin, Params: append(nameParam, Param{Name: "digest", In: "query", Type: "string", Description: "digest the change is based on"}), Resp: wire.NetworkConfig{},
			Handle: func(r *Request) (any, error) {
				if sv.HostNet == nil {
					return nil, errNoHostNet
				}
				return sv.HostNet.Edit(r.Context(), r.URL.Query().Get("digest"), hostnet.RemoveFunc(r.PathValue("name")))
			}},
		{Method: "DELETE", Path: "/api/v1/node/network", Summary: "Revert: drop the staged changes (interfaces.new).", Role: wire.RoleAdmin,
			Handle: func(r *Request) (any, error) {
				if sv.HostNet == nil {
					return nil, errNoHostNet
				}
				return nil, sv.HostNet.Revert(r.Context())
			}},
		{Method: "POST", Path: "/api/v1/node/network/apply", Summary: "Move staged changes into place and apply them live, as a task; over HTTPS the change is rolled back after 60 s unless confirmed.", Role: wire.RoleAdmin, Body: wire.NetworkApplyRequest{}, Async: true,
			Handle: sv.netApply},
		{Method: "POST", Path: "/api/v1/node/network/confirm", Summary: "Keep the last applied change: cancel its pending rollback.", Role: wire.RoleAdmin,
			Handle: func(r *Request) (any, error) {
				if sv.HostNet == nil {
					return nil, errNoHostNet
				}
				return nil, sv.HostNet.Confirm(r.Context())
			}},
		{Method: "POST", Path: "/api/v1/node/network/rollback", Summary: "Roll back the last applied change now, as a task.", Role: wire.RoleAdmin, Async: true,
			Handle: func(r *Request) (any, error) {
				if sv.HostNet == nil {
					return nil, errNoHostNet
				}
				u, err := sv.HostNet.Rollback("asked by " + r.Identity.User)
				if err != nil {
					return nil, err
				}
				return wire.Accepted{UPID: u.String()}, nil
			}},
	}
}

func (sv *Services) netApply(r *Request) (any, error) {
	var in wire.NetworkApplyRequest
	if r.ContentLength != 0 {
		if err := r.Decode(&in); err != nil {
			return nil, err
		}
	}
	if sv.HostNet == nil {
		return nil, errNoHostNet
	}
	after := time.Duration(0)
	if r.Identity.Via != "unix" {
		after = DefaultRollbackAfter
	}
	if in.RollbackAfter != nil {
		if *in.RollbackAfter < 0 || *in.RollbackAfter > 86400 {
			return nil, Invalid("invalid rollback_after", map[string]string{"rollback_after": "seconds from 0 (off) to 86400"})
		}
		after = time.Duration(*in.RollbackAfter) * time.Second
	}
	u, err := sv.HostNet.Apply(r.Context(), taskUser(r.Identity.User), in, after)
	if err != nil {
		return nil, err
	}
	return wire.Accepted{UPID: u.String()}, nil
}
