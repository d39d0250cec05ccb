package api

import (
	"net"
	"net/http"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/auth"
)

func (sv *Services) accessRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/v1/version", Summary: "Daemon version and node name.", Role: wire.RoleAuditor, Resp: wire.Version{},
			Handle: func(r *Request) (any, error) {
				return wire.Version{Version: sv.Version, Node: sv.Node, API: "v1"}, nil
			}},
		{Method: "GET", Path: "/api/v1/access/whoami", Summary: "The caller's identity and role.", Role: wire.RoleAuditor, Resp: wire.Identity{},
			Handle: func(r *Request) (any, error) { return r.Identity, nil }},
		{Method: "POST", Path: "/api/v1/access/ticket", Summary: "Log in with user name and password; sets the ticket cookie and returns the CSRF token. Failed logins are rate-limited.",
			Role: Public, Body: wire.LoginRequest{}, Resp: wire.Ticket{}, Stream: sv.login},
		{Method: "GET", Path: "/api/v1/access/users", Summary: "List local users.", Role: wire.RoleAdmin, Resp: []wire.User{},
			Handle: func(r *Request) (any, error) { return sv.Auth.Users(r.Context()) }},
		{Method: "POST", Path: "/api/v1/access/users", Summary: "Add a local user (password hashed with argon2id).", Role: wire.RoleAdmin, Body: wire.UserCreate{}, Resp: wire.User{},
			Handle: func(r *Request) (any, error) {
				var in wire.UserCreate
				if err := r.Decode(&in); err != nil {
					return nil, err
				}
				return sv.Auth.AddUser(r.Context(), in)
			}},
		{Method: "PUT", Path: "/api/v1/access/users/{name}", Summary: "Change a user's password, role, comment or enabled flag.", Role: wire.RoleAdmin, Body: wire.UserUpdate{}, Resp: wire.User{},
			Handle: func(r *Request) (any, error) {
				var in wire.UserUpdate
				if err := r.Decode(&in); err != nil {
					return nil, err
				}
				return sv.Auth.UpdateUser(r.Context(), r.PathValue("name"), in)
			}},
		{Method: "DELETE", Path: "/api/v1/access/users/{name}", Summary: "Remove a local user.", Role: wire.RoleAdmin,
			Handle: func(r *Request) (any, error) { return nil, sv.Auth.RemoveUser(r.Context(), r.PathValue("name")) }},
		{Method: "GET", Path: "/api/v1/access/tokens", Summary: "List API tokens (never their secrets).", Role: wire.RoleAdmin, Resp: []wire.Token{},
			Handle: func(r *Request) (any, error) { return sv.Auth.Tokens(r.Context()) }},
		{Method: "POST", Path: "/api/v1/access/tokens", Summary: "Create an API token; the secret is in this answer only.", Role: wire.RoleAdmin, Body: wire.TokenCreate{}, Resp: wire.TokenSecret{},
			Handle: func(r *Request) (any, error) {
				var in wire.TokenCreate
				if err := r.Decode(&in); err != nil {
					return nil, err
				}
				return sv.Auth.CreateToken(r.Context(), in)
			}},
		{Method: "DELETE", Path: "/api/v1/access/tokens/{name}", Summary: "Revoke an API token.", Role: wire.RoleAdmin,
			Handle: func(r *Request) (any, error) { return nil, sv.Auth.RemoveToken(r.Context(), r.PathValue("name")) }},
	}
}

func (sv *Services) login(w http.ResponseWriter, r *Request) error {
	var in wire.LoginRequest
	if err := r.Decode(&in); err != nil {
		return err
	}
	remote, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		remote = r.RemoteAddr
	}
	if remote == "" || remote == "@" {
		remote = "unix"
	}
	t, err := sv.Auth.Login(r.Context(), in.Username, in.Password, remote)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: t.Ticket, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: int(auth.TicketLifetime.Seconds())})
	writeJSON(w, http.StatusOK, wire.Envelope[wire.Ticket]{Data: t})
	return nil
}
