package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	wire "github.com/berthhq/berth/api"
)

func TestDecodeBody(t *testing.T) {
	atLimit := `{"comment":"` + strings.Repeat("x", MaxBody-len(`{"comment":""}`)) + `"}`
	if len(atLimit) != MaxBody {
		t.Fatalf("atLimit is %d bytes", len(atLimit))
	}
	tests := []struct {
		name string
		body io.Reader // nil means no body at all
		into func() any
		// For failures: the status, code, and field names (with a
		// substring each message must hold) the error must carry.
		status  int
		code    string
		fields  map[string]string
		msgPart string
		// For successes: the decoded value.
		want any
	}{
		{name: "valid user", body: strings.NewReader(`{"name":"alice","password":"12345678","role":"auditor"}`),
			into: func() any { return &wire.UserCreate{} },
			want: &wire.UserCreate{Name: "alice", Password: "12345678", Role: "auditor"}},
		{name: "valid with surrounding whitespace", body: strings.NewReader("\n {\"force\":true,\"timeout\":5}\n\n"),
			into: func() any { return &wire.BulkRequest{} },
			want: &wire.BulkRequest{Force: true, Timeout: 5}},
		{name: "nested guest", body: strings.NewReader(`{"id":100,"kind":"vm","startup":{"order":2,"up":5},"config":{"memory":"512"}}`),
			into: func() any { return &wire.Guest{} },
			want: &wire.Guest{ID: 100, Kind: wire.GuestVM, Startup: wire.Startup{Order: 2, Up: 5}, Config: map[string]string{"memory": "512"}}},
		{name: "exactly MaxBody bytes", body: strings.NewReader(atLimit),
			into: func() any { return &wire.TokenCreate{} },
			want: &wire.TokenCreate{Comment: strings.Repeat("x", MaxBody-len(`{"comment":""}`))}},

		{name: "unknown field names the field", body: strings.NewReader(`{"name":"a","rolle":"admin"}`),
			into:   func() any { return &wire.TokenCreate{} },
			status: 400, code: "invalid", fields: map[string]string{"rolle": "not a known field"}},
		{name: "unknown nested field", body: strings.NewReader(`{"startup":{"order":1,"later":2}}`),
			into:   func() any { return &wire.GuestConfigUpdate{} },
			status: 400, code: "invalid", fields: map[string]string{"later": "not a known field"}},
		{name: "wrong type names the field", body: strings.NewReader(`{"username":"bob","password":12345}`),
			into:   func() any { return &wire.LoginRequest{} },
			status: 400, code: "invalid", fields: map[string]string{"password": "expected string, got JSON number"}},
		{name: "wrong type in nested field names the path", body: strings.NewReader(`{"id":100,"startup":{"order":"first"}}`),
			into:   func() any { return &wire.Guest{} },
			status: 400, code: "invalid", fields: map[string]string{"startup.order": "expected int"}},
		{name: "wrong type bool", body: strings.NewReader(`{"force":"yes"}`),
			into:   func() any { return &wire.BulkRequest{} },
			status: 400, code: "invalid", fields: map[string]string{"force": "expected bool"}},
		{name: "number out of range", body: strings.NewReader(`{"startall-onboot-delay":1e400}`),
			into:   func() any { return &wire.NodeConfigUpdate{} },
			status: 400, code: "invalid", fields: map[string]string{"startall-onboot-delay": "expected int"}},
		{name: "array instead of object", body: strings.NewReader(`[{"target":"x"}]`),
			into:   func() any { return &wire.WakeOnLANRequest{} },
			status: 400, code: "invalid", fields: map[string]string{"body": "got an array"}},

		{name: "over MaxBody is 413", body: strings.NewReader(atLimit + " "),
			into:   func() any { return &wire.TokenCreate{} },
			status: 413, code: "too_large", msgPart: "exceeds 1048576 bytes"},
		{name: "far over MaxBody is 413", body: io.MultiReader(strings.NewReader(`{"name":"`), bytes.NewReader(make([]byte, 3*MaxBody))),
			into:   func() any { return &wire.UserCreate{} },
			status: 413, code: "too_large"},

		{name: "trailing second value", body: strings.NewReader(`{"name":"a"} {"name":"b"}`),
			into:   func() any { return &wire.TokenCreate{} },
			status: 400, code: "invalid", msgPart: "more than one JSON value"},
		{name: "trailing second value no space", body: strings.NewReader(`{}[]`),
			into:   func() any { return &wire.BulkRequest{} },
			status: 400, code: "invalid", msgPart: "more than one JSON value"},
		{name: "trailing closing brace", body: strings.NewReader(`{"force":true}}`),
			into:   func() any { return &wire.BulkRequest{} },
			status: 400, code: "invalid"},
		{name: "trailing closing bracket", body: strings.NewReader(`{"name":"a"} ]`),
			into:   func() any { return &wire.TokenCreate{} },
			status: 400, code: "invalid"},

		{name: "syntax error", body: strings.NewReader(`{"name" "a"}`),
			into:   func() any { return &wire.UserCreate{} },
			status: 400, code: "invalid", msgPart: "not valid JSON"},
		{name: "truncated", body: strings.NewReader(`{"name":"a"`),
			into:   func() any { return &wire.UserCreate{} },
			status: 400, code: "invalid", msgPart: "cannot decode"},
		{name: "empty", body: strings.NewReader(``),
			into:   func() any { return &wire.BulkRequest{} },
			status: 400, code: "invalid", msgPart: "empty"},
		{name: "whitespace only", body: strings.NewReader(" \r\n\t "),
			into:   func() any { return &wire.BulkRequest{} },
			status: 400, code: "invalid", msgPart: "empty"},
		{name: "nil body", body: nil,
			into:   func() any { return &wire.BulkRequest{} },
			status: 400, code: "invalid", msgPart: "empty"},
		{name: "read error", body: iotest.ErrReader(errors.New("connection reset")),
			into:   func() any { return &wire.BulkRequest{} },
			status: 400, code: "invalid", msgPart: "connection reset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.into()
			var err error
			if tc.body == nil {
				err = DecodeBody(nil, v)
			} else {
				err = DecodeBody(tc.body, v)
			}
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("DecodeBody: %v", err)
				}
				if d := cmp.Diff(tc.want, v); d != "" {
					t.Fatalf("decoded value (-want +got):\n%s", d)
				}
				return
			}
			var we *wire.Error
			if !errors.As(err, &we) {
				t.Fatalf("DecodeBody error = %T %v, want *api.Error", err, err)
			}
			if we.Status != tc.status || we.Code != tc.code {
				t.Errorf("status, code = %d, %q; want %d, %q (message %q)", we.Status, we.Code, tc.status, tc.code, we.Message)
			}
			if we.Message == "" {
				t.Error("empty message")
			}
			if tc.msgPart != "" && !strings.Contains(we.Message, tc.msgPart) {
				t.Errorf("message %q does not contain %q", we.Message, tc.msgPart)
			}
			if len(we.Fields) != len(tc.fields) {
				t.Errorf("fields = %v, want keys of %v", we.Fields, tc.fields)
			}
			for f, part := range tc.fields {
				msg, ok := we.Fields[f]
				if !ok {
					t.Errorf("fields %v do not name %q", we.Fields, f)
				} else if !strings.Contains(msg, part) {
					t.Errorf("fields[%q] = %q, want it to contain %q", f, msg, part)
				}
			}
		})
	}
}

// TestRequestDecodeUsesBody checks that Request.Decode reads the request body
// with the same rules.
func TestRequestDecodeUsesBody(t *testing.T) {
	hr, err := http.NewRequest("POST", "/x", strings.NewReader(`{"target":"aa:bb:cc:dd:ee:ff","bogus":1}`))
	if err != nil {
		t.Fatal(err)
	}
	var in wire.WakeOnLANRequest
	err = (&Request{Request: hr}).Decode(&in)
	var we *wire.Error
	if !errors.As(err, &we) || we.Status != 400 || we.Fields["bogus"] == "" {
		t.Fatalf("Decode = %v, want a 400 naming field bogus", err)
	}
}
