package api

import (
	"context"
	"errors"
	"net/http"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/auth"
	"github.com/berthhq/berth/internal/store"
)

// fieldErrors is implemented by the services' validation errors.
type fieldErrors interface {
	error
	FieldErrors() map[string]string
}

// Extra error classes that services can add without this package importing
// them: a service error that implements StatusCoder chooses its own status.
type StatusCoder interface {
	error
	StatusCode() (status int, code string)
}

// toWire maps an error to its HTTP status, code and message. The one place
// where service errors become HTTP.
func toWire(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	var fe fieldErrors
	if errors.As(err, &fe) {
		return &wire.Error{Status: http.StatusBadRequest, Code: "invalid", Message: err.Error(), Fields: fe.FieldErrors()}
	}
	var sc StatusCoder
	if errors.As(err, &sc) {
		st, code := sc.StatusCode()
		return &wire.Error{Status: st, Code: code, Message: err.Error()}
	}
	mk := func(status int, code string) *wire.Error {
		return &wire.Error{Status: status, Code: code, Message: err.Error()}
	}
	switch {
	case errors.Is(err, auth.ErrRateLimited):
		return mk(http.StatusTooManyRequests, "rate_limited")
	case errors.Is(err, auth.ErrUnauthenticated), errors.Is(err, auth.ErrBadCredentials):
		return mk(http.StatusUnauthorized, "unauthenticated")
	case errors.Is(err, auth.ErrForbidden):
		return mk(http.StatusForbidden, "forbidden")
	case errors.Is(err, store.ErrNotFound):
		return mk(http.StatusNotFound, "not_found")
	case errors.Is(err, store.ErrConflict):
		return &wire.Error{Status: http.StatusConflict, Code: "conflict", Message: err.Error() + ": read the object again and retry with its current digest"}
	case errors.Is(err, store.ErrExists):
		return mk(http.StatusConflict, "exists")
	case errors.Is(err, store.ErrInvalidKey):
		return mk(http.StatusBadRequest, "invalid")
	case errors.Is(err, context.DeadlineExceeded):
		return mk(http.StatusGatewayTimeout, "timeout")
	}
	return &wire.Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error: " + err.Error() + " (see the daemon log)"}
}
