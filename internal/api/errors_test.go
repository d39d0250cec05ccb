package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/auth"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/store"
)

type teapotErr struct{}

func (teapotErr) Error() string             { return "short and stout" }
func (teapotErr) StatusCode() (int, string) { return http.StatusTeapot, "teapot" }

// Unwrap makes it also a not-found error: the StatusCoder must win.
func (teapotErr) Unwrap() error { return store.ErrNotFound }

func TestToWire(t *testing.T) {
	passThrough := &wire.Error{Status: http.StatusConflict, Code: "running", Message: "guest 100 is running: stop it first"}
	tests := []struct {
		name    string
		err     error
		status  int
		code    string
		fields  map[string]string
		msgPart string // "" means the message must equal err.Error()
		same    *wire.Error
	}{
		{name: "not found wrapped", err: fmt.Errorf("get task X: %w", store.ErrNotFound), status: 404, code: "not_found"},
		{name: "not found double wrapped", err: fmt.Errorf("a: %w", fmt.Errorf("b: %w", store.ErrNotFound)), status: 404, code: "not_found"},
		{name: "conflict wrapped", err: fmt.Errorf("node configuration: %w", store.ErrConflict), status: 409, code: "conflict",
			msgPart: "retry with its current digest"},
		{name: "exists wrapped", err: fmt.Errorf("add user alice: %w", store.ErrExists), status: 409, code: "exists"},
		{name: "invalid key", err: fmt.Errorf("put: %w", store.ErrInvalidKey), status: 400, code: "invalid"},
		{name: "unauthenticated", err: auth.ErrUnauthenticated, status: 401, code: "unauthenticated"},
		{name: "unauthenticated wrapped", err: fmt.Errorf("%w: malformed token", auth.ErrUnauthenticated), status: 401, code: "unauthenticated"},
		{name: "bad credentials", err: auth.ErrBadCredentials, status: 401, code: "unauthenticated"},
		{name: "forbidden", err: fmt.Errorf("x: %w", auth.ErrForbidden), status: 403, code: "forbidden"},
		{name: "rate limited", err: auth.ErrRateLimited, status: 429, code: "rate_limited"},
		{name: "deadline", err: fmt.Errorf("wol: %w", context.DeadlineExceeded), status: 504, code: "timeout"},
		{name: "auth validation error", err: &auth.ValidationError{Fields: map[string]string{"name": "bad", "role": "not a role"}},
			// Its Error lists fields in map order, so only a part is stable.
			status: 400, code: "invalid", fields: map[string]string{"name": "bad", "role": "not a role"}, msgPart: "invalid request: "},
		{name: "wrapped validation error", err: fmt.Errorf("create: %w", &auth.ValidationError{Fields: map[string]string{"password": "short"}}),
			status: 400, code: "invalid", fields: map[string]string{"password": "short"}},
		{name: "guest validation error", err: &guest.ValidationError{Fields: map[string]string{"kind": "no driver"}},
			status: 400, code: "invalid", fields: map[string]string{"kind": "no driver"}},
		{name: "status coder", err: fmt.Errorf("brew: %w", teapotErr{}), status: 418, code: "teapot"},
		{name: "api error passes through", err: passThrough, same: passThrough, status: 409, code: "running", msgPart: "stop it first"},
		{name: "wrapped api error passes through", err: fmt.Errorf("ctx: %w", passThrough), same: passThrough, status: 409, code: "running", msgPart: "stop it first"},
		{name: "plain error", err: errors.New("disk on fire"), status: 500, code: "internal", msgPart: "internal error: disk on fire"},
		{name: "canceled is internal", err: context.Canceled, status: 500, code: "internal", msgPart: "context canceled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := toWire(tc.err)
			if got == nil {
				t.Fatal("toWire returned nil")
			}
			if tc.same != nil && got != tc.same {
				t.Errorf("toWire returned %p, want the *api.Error %p itself", got, tc.same)
			}
			if got.Status != tc.status || got.Code != tc.code {
				t.Errorf("toWire(%v) = %d %q, want %d %q", tc.err, got.Status, got.Code, tc.status, tc.code)
			}
			if tc.msgPart == "" {
				if got.Message != tc.err.Error() {
					t.Errorf("message = %q, want %q", got.Message, tc.err.Error())
				}
			} else if !strings.Contains(got.Message, tc.msgPart) {
				t.Errorf("message = %q, want it to contain %q", got.Message, tc.msgPart)
			}
			if d := cmp.Diff(tc.fields, got.Fields); d != "" {
				t.Errorf("fields (-want +got):\n%s", d)
			}
		})
	}
}

// TestWriteError checks the HTTP side: status line, JSON body, and the
// WWW-Authenticate header on 401 only.
func TestWriteError(t *testing.T) {
	log := discardLogger()
	tests := []struct {
		err      error
		status   int
		wantAuth bool
	}{
		{auth.ErrUnauthenticated, 401, true},
		{auth.ErrForbidden, 403, false},
		{auth.ErrRateLimited, 429, false},
		{errors.New("boom"), 500, false},
	}
	for _, tc := range tests {
		rec := httptest.NewRecorder()
		writeError(rec, log, httptest.NewRequest("GET", "/api/v1/x", nil), tc.err)
		if rec.Code != tc.status {
			t.Errorf("%v: status %d, want %d", tc.err, rec.Code, tc.status)
		}
		if got := rec.Header().Get("WWW-Authenticate") != ""; got != tc.wantAuth {
			t.Errorf("%v: WWW-Authenticate present = %v, want %v", tc.err, got, tc.wantAuth)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%v: Content-Type %q", tc.err, ct)
		}
		body := decodeJSON[wire.ErrorBody](t, rec.Body.Bytes())
		if body.Error.Status != tc.status || body.Error.Message == "" {
			t.Errorf("%v: body %+v", tc.err, body)
		}
	}
}
