package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/auth"
)

// CookieName is the cookie that carries a login ticket.
const CookieName = "BerthAuthCookie"

// CSRFHeader carries the CSRF prevention token on writes made with a ticket.
const CSRFHeader = "CSRFPreventionToken"

type peerKey struct{}

// Peer is the credential of a unix-socket client.
type Peer struct{ UID, PID int }

// ConnContext records the peer credentials of unix-socket connections; set
// it as http.Server.ConnContext on the socket's server.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, Peer{UID: int(cred.Uid), PID: int(cred.Pid)})
}

// Authenticator is what the server needs from the auth service.
type Authenticator interface {
	AuthenticateToken(ctx context.Context, value string) (wire.Identity, error)
	VerifyTicket(ctx context.Context, ticket string) (wire.Identity, error)
	VerifyCSRF(user, token string) bool
}

// Server is the HTTP side of the daemon.
type Server struct {
	log     *slog.Logger
	auth    Authenticator
	routes  []Route
	mux     *http.ServeMux
	openapi []byte
	// follow streams a started task's log (SetTaskFollower).
	follow func(w http.ResponseWriter, r *Request, upid string) error
}

// SetTaskFollower lets async routes answer follow=1 with the log stream
// of the task they started, written by fn (Services.FollowTask): one
// request instead of the start and a GET of the log.
func (s *Server) SetTaskFollower(fn func(w http.ResponseWriter, r *Request, upid string) error) {
	s.follow = fn
}

// NewServer builds the mux from routes. version goes into the OpenAPI info.
func NewServer(log *slog.Logger, a Authenticator, version string, routes []Route) (*Server, error) {
	s := &Server{log: log, auth: a, mux: http.NewServeMux()}
	s.routes = append(append([]Route(nil), routes...), Route{
		Method: "GET", Path: "/api/v1/openapi.json", Summary: "This API's OpenAPI 3.1 document, generated from the route table.",
		Role: Public, ContentType: "application/json",
		Stream: func(w http.ResponseWriter, r *Request) error {
			w.Header().Set("Content-Type", "application/json")
			_, err := w.Write(s.openapi)
			return err
		},
	})
	doc, err := OpenAPI(version, s.routes)
	if err != nil {
		return nil, err
	}
	s.openapi = doc
	for _, rt := range s.routes {
		if rt.Handle == nil && rt.Stream == nil {
			return nil, fmt.Errorf("route %s %s has no handler", rt.Method, rt.Path)
		}
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, s.log, r, &wire.Error{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("no route %s %s: see /api/v1/openapi.json", r.Method, r.URL.Path)})
	})
	return s, nil
}

// Routes returns the route table including the OpenAPI route.
func (s *Server) Routes() []Route { return s.routes }

// OpenAPIDocument returns the generated document.
func (s *Server) OpenAPIDocument() []byte { return s.openapi }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// identify works out who is calling.
func (s *Server) identify(r *http.Request) (wire.Identity, error) {
	if p, ok := r.Context().Value(peerKey{}).(Peer); ok && p.UID == 0 {
		return wire.Identity{User: "root@pam", Role: wire.RoleAdmin, Via: "unix"}, nil
	}
	if h := r.Header.Get("Authorization"); h != "" {
		v, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return wire.Identity{}, fmt.Errorf("%w: the Authorization header must read 'Bearer <token>'", auth.ErrUnauthenticated)
		}
		return s.auth.AuthenticateToken(r.Context(), strings.TrimSpace(v))
	}
	if c, err := r.Cookie(CookieName); err == nil {
		id, err := s.auth.VerifyTicket(r.Context(), c.Value)
		if err != nil {
			return id, err
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !s.auth.VerifyCSRF(id.User, r.Header.Get(CSRFHeader)) {
			return wire.Identity{}, &wire.Error{Status: http.StatusForbidden, Code: "csrf", Message: "missing or invalid CSRFPreventionToken header: writes made with a ticket cookie must send the token returned at login"}
		}
		return id, nil
	}
	return wire.Identity{}, auth.ErrUnauthenticated
}

func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		req := &Request{Request: hr}
		if rt.Role != Public {
			id, err := s.identify(hr)
			if err != nil {
				writeError(w, s.log, hr, err)
				return
			}
			if !auth.Allows(id.Role, rt.Role) {
				writeError(w, s.log, hr, &wire.Error{Status: http.StatusForbidden, Code: "forbidden",
					Message: fmt.Sprintf("permission denied: %s %s needs role %s or higher; %s has role %s", rt.Method, rt.Path, rt.Role, id.User, id.Role)})
				return
			}
			req.Identity = id
		}
		if rt.Stream != nil {
			if err := rt.Stream(w, req); err != nil {
				writeError(w, s.log, hr, err)
			}
			return
		}
		follow := false
		if rt.Async && s.follow != nil {
			var err error
			if follow, err = req.QueryBool("follow"); err != nil {
				writeError(w, s.log, hr, err)
				return
			}
		}
		data, err := rt.Handle(req)
		if err != nil {
			writeError(w, s.log, hr, err)
			return
		}
		if acc, ok := data.(wire.Accepted); ok && follow {
			if err := s.follow(w, req, acc.UPID); err != nil {
				writeError(w, s.log, hr, err)
			}
			return
		}
		status := http.StatusOK
		if rt.Async {
			status = http.StatusAccepted
		}
		if data == nil {
			data = struct{}{}
		}
		writeJSON(w, status, wire.Envelope[any]{Data: data})
	})
}

// Listen helpers ------------------------------------------------------------

// HTTPServer returns an http.Server with sane timeouts for h.
func HTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// IsClientGone reports whether err only says the client went away.
func IsClientGone(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, net.ErrClosed)
}
