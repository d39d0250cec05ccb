package api

import (
	"net/http"

	wire "github.com/berthhq/berth/api"
)

var macParam = []Param{{Name: "mac", In: "path", Type: "string", Description: "client MAC address, aa:bb:cc:dd:ee:ff"}}

func (sv *Services) netbootRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/v1/netboot/status", Summary: "Network boot state: interfaces, listeners, per-service counters (DHCP offers/acks/naks/BOOTP, TFTP and HTTP transfers and bytes, errors).", Role: wire.RoleAuditor, Resp: wire.NetbootStatus{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				return sv.Netboot.Status(r.Context())
			})},
		{Method: "GET", Path: "/api/v1/netboot/config", Summary: "Network boot configuration with its digest.", Role: wire.RoleAuditor, Resp: wire.NetbootConfig{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				return sv.Netboot.Config(r.Context())
			})},
		{Method: "POST", Path: "/api/v1/netboot/enable", Summary: "Serve network boot on an interface (DHCP or ProxyDHCP, TFTP, HTTP); checked before anything changes.", Role: wire.RoleAdmin, Body: wire.NetbootEnable{}, Resp: wire.NetbootConfig{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				var in wire.NetbootEnable
				if err := r.Decode(&in); err != nil {
					return nil, err
				}
				if in.Name == "" {
					return nil, Invalid("no interface", map[string]string{"name": "name the interface or bridge to serve (--interface)"})
				}
				cfg, err := sv.Netboot.Enable(r.Context(), in)
				if err == nil {
					sv.Log.Info("netboot enabled", "interface", in.Name, "proxy", in.Proxy, "user", r.Identity.User)
				}
				return cfg, err
			})},
		{Method: "POST", Path: "/api/v1/netboot/disable", Summary: "Stop serving network boot on one interface, or everywhere.", Role: wire.RoleAdmin, Body: wire.NetbootDisable{}, Resp: wire.NetbootConfig{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				var in wire.NetbootDisable
				if r.ContentLength != 0 {
					if err := r.Decode(&in); err != nil {
						return nil, err
					}
				}
				cfg, err := sv.Netboot.Disable(r.Context(), in.Interface)
				if err == nil {
					sv.Log.Info("netboot disabled", "interface", in.Interface, "user", r.Identity.User)
				}
				return cfg, err
			})},
		{Method: "GET", Path: "/api/v1/netboot/hosts", Summary: "The network boot host database.", Role: wire.RoleAuditor, Resp: []wire.NetbootHost{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				return sv.Netboot.Hosts.List(r.Context())
			})},
		{Method: "POST", Path: "/api/v1/netboot/hosts", Summary: "Add a host (409 if its MAC exists).", Role: wire.RoleAdmin, Body: wire.NetbootHost{}, Resp: wire.NetbootHost{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				var h wire.NetbootHost
				if err := r.Decode(&h); err != nil {
					return nil, err
				}
				return sv.Netboot.Hosts.Add(r.Context(), h)
			})},
		{Method: "POST", Path: "/api/v1/netboot/hosts/import", Summary: "Import hosts from a bootptab, dnsmasq or dhcpd file; nothing is imported from a file with unreadable lines unless skip-bad.", Role: wire.RoleAdmin, Body: wire.NetbootHostImport{}, Resp: wire.NetbootImportResult{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				var in wire.NetbootHostImport
				if err := r.Decode(&in); err != nil {
					return nil, err
				}
				return sv.Netboot.Import(r.Context(), in)
			})},
		{Method: "GET", Path: "/api/v1/netboot/hosts/{mac}", Summary: "One host with its digest.", Role: wire.RoleAuditor, Params: macParam, Resp: wire.NetbootHost{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				return sv.Netboot.Hosts.Get(r.Context(), r.PathValue("mac"))
			})},
		{Method: "PUT", Path: "/api/v1/netboot/hosts/{mac}", Summary: "Replace a host's entry; a stale digest gets 409.", Role: wire.RoleAdmin, Params: macParam, Body: wire.NetbootHost{}, Resp: wire.NetbootHost{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				var h wire.NetbootHost
				if err := r.Decode(&h); err != nil {
					return nil, err
				}
				if h.MAC == "" {
					h.MAC = r.PathValue("mac")
				}
				return sv.Netboot.Hosts.Set(r.Context(), h)
			})},
		{Method: "DELETE", Path: "/api/v1/netboot/hosts/{mac}", Summary: "Remove a host (digest query parameter: only if unchanged).", Role: wire.RoleAdmin,
			Params: append(macParam, Param{Name: "digest", In: "query", Type: "string", Description: "remove only if the entry still has this digest"}),
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				return nil, sv.Netboot.Hosts.Remove(r.Context(), r.PathValue("mac"), r.URL.Query().Get("digest"))
			})},
		{Method: "GET", Path: "/api/v1/netboot/leases", Summary: "DHCP leases of the dynamic pools (bound, released, declined, expired).", Role: wire.RoleAuditor, Resp: []wire.NetbootLease{},
			Handle: sv.withNetboot(func(r *Request) (any, error) {
				return sv.Netboot.Leases(), nil
			})},
	}
}

// withNetboot answers 503 when the daemon has no netboot service.
func (sv *Services) withNetboot(h func(r *Request) (any, error)) func(r *Request) (any, error) {
	return func(r *Request) (any, error) {
		if err := sv.netbootReady(); err != nil {
			return nil, err
		}
		return h(r)
	}
}

func (sv *Services) netbootReady() error {
	if sv.Netboot == nil {
		return &wire.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "network boot is not set up in this daemon"}
	}
	return nil
}
