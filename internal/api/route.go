package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	wire "github.com/berthhq/berth/api"
)

// Public marks a route that needs no authentication.
const Public = "public"

// Param documents a path or query parameter.
type Param struct {
	Name        string
	In          string // "path" or "query"
	Type        string // "string", "integer", "boolean"
	Description string
}

// Route is one entry of the route table. The same entry drives the mux, the
// role check and the OpenAPI document.
type Route struct {
	Method  string
	Path    string
	Summary string
	// Role is the minimum role ("auditor", "operator", "admin") or Public.
	Role   string
	Params []Param
	// Body is a value of the request body type; nil for no body.
	Body any
	// Resp is a value of the response data type; nil for none.
	Resp any
	// Async routes answer 202 with the UPID of the task they started.
	Async bool
	// Handle serves the route; its result goes into the envelope.
	Handle func(r *Request) (any, error)
	// Stream, when set instead of Handle, writes the response itself.
	Stream func(w http.ResponseWriter, r *Request) error
	// ContentType of a Stream route's body, for the documentation.
	ContentType string
}

// Request is what a handler receives.
type Request struct {
	*http.Request
	Identity wire.Identity
}

// MaxBody is the largest request body the API reads.
const MaxBody = 1 << 20

// Decode reads the JSON body strictly into v: one object, no unknown fields,
// at most MaxBody bytes. Errors are 400s that name the problem.
func (r *Request) Decode(v any) error {
	return DecodeBody(r.Body, v)
}

// DecodeBody is Decode on any reader; it is what the fuzz test exercises.
func DecodeBody(body io.Reader, v any) error {
	if body == nil {
		return Invalid("request body is empty: send a JSON object", nil)
	}
	data, err := io.ReadAll(io.LimitReader(body, MaxBody+1))
	if err != nil {
		return Invalid("cannot read request body: "+err.Error(), nil)
	}
	if len(data) > MaxBody {
		return &wire.Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("request body exceeds %d bytes", MaxBody)}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return Invalid("request body is empty: send a JSON object", nil)
	}
	if trimmed[0] != '{' {
		kind := map[byte]string{'[': "an array", '"': "a string", 'n': "null", 't': "a boolean", 'f': "a boolean"}[trimmed[0]]
		if kind == "" {
			kind = "a number or invalid JSON"
		}
		return Invalid("request body must be a JSON object", map[string]string{"body": "got " + kind + ", want an object {…}"})
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &ute):
			field := ute.Field
			if field == "" {
				field = "body"
			}
			return Invalid("wrong type in request body", map[string]string{field: fmt.Sprintf("expected %s, got JSON %s", ute.Type, ute.Value)})
		case errors.As(err, &se):
			return Invalid(fmt.Sprintf("request body is not valid JSON (at byte %d): %v", se.Offset, err), nil)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return Invalid("unknown field in request body", map[string]string{name: "not a known field: check the API reference"})
		default:
			return Invalid("cannot decode request body: "+err.Error(), nil)
		}
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) != 0 {
		return Invalid("request body holds more than one JSON value", nil)
	}
	return nil
}

// Invalid is a 400 error with optional per-field messages.
func Invalid(msg string, fields map[string]string) *wire.Error {
	return &wire.Error{Status: http.StatusBadRequest, Code: "invalid", Message: msg, Fields: fields}
}

// QueryInt reads an integer query parameter, def when absent.
func (r *Request) QueryInt(name string, def int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, Invalid("bad query parameter", map[string]string{name: fmt.Sprintf("%q is not an integer", s)})
	}
	return n, nil
}

// QueryBool reads a boolean query parameter (1/0/true/false).
func (r *Request) QueryBool(name string) (bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, Invalid("bad query parameter", map[string]string{name: fmt.Sprintf("%q is not a boolean", s)})
	}
	return b, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// writeError turns any error into the structured error response.
func writeError(w http.ResponseWriter, log *slog.Logger, r *http.Request, err error) {
	e := toWire(err)
	if e.Status >= 500 {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
	}
	writeJSON(w, e.Status, wire.ErrorBody{Error: *e})
}
