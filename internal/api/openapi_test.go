package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	wire "github.com/berthhq/berth/api"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func decodeJSON[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, b, err)
	}
	return v
}

// realServer builds the server on the real route table; handlers are never
// called, so the services may be empty.
func realServer(t *testing.T) *Server {
	t.Helper()
	s, err := NewServer(discardLogger(), nil, "test", (&Services{}).Routes())
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	return s
}

// collectRefs returns every "$ref" value anywhere in v.
func collectRefs(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == "$ref" {
				if s, ok := e.(string); ok {
					*out = append(*out, s)
				} else {
					*out = append(*out, "<non-string $ref>")
				}
				continue
			}
			collectRefs(e, out)
		}
	case []any:
		for _, e := range x {
			collectRefs(e, out)
		}
	}
}

func TestOpenAPIDocument(t *testing.T) {
	s := realServer(t)
	raw := s.OpenAPIDocument()
	if !json.Valid(raw) {
		t.Fatalf("document is not valid JSON")
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", doc["openapi"])
	}
	info, _ := doc["info"].(map[string]any)
	if info["version"] != "test" || info["title"] == "" {
		t.Errorf("info = %v, want version test and a title", info)
	}
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		t.Fatalf("paths is %T", doc["paths"])
	}
	comps, _ := doc["components"].(map[string]any)
	schemas, ok := comps["schemas"].(map[string]any)
	if !ok {
		t.Fatalf("components.schemas is %T", comps["schemas"])
	}
	if _, ok := schemas["ErrorBody"]; !ok {
		t.Error("components.schemas has no ErrorBody")
	}
	for name, sc := range schemas {
		if sc == nil {
			t.Errorf("schema %s is null", name)
		}
	}

	// Every route of the table has an operation, and there are no
	// operations the table does not have; the server's own
	// /api/v1/openapi.json route is documented too.
	routes := (&Services{}).Routes()
	if n := len(s.Routes()); n != len(routes)+1 {
		t.Errorf("server has %d routes, want the table's %d plus openapi.json", n, len(routes))
	}
	if len(routes) < 20 {
		t.Fatalf("only %d routes: the route table looks truncated", len(routes))
	}
	ops := 0
	for _, p := range paths {
		ops += len(p.(map[string]any))
	}
	if ops != len(routes)+1 {
		t.Errorf("document has %d operations, want the route table's %d plus openapi.json", ops, len(routes))
	}
	opIDs := map[string]string{}
	for _, rt := range routes {
		key := rt.Method + " " + rt.Path
		t.Run(key, func(t *testing.T) {
			p, ok := paths[rt.Path].(map[string]any)
			if !ok {
				t.Fatalf("path %s missing", rt.Path)
			}
			op, ok := p[strings.ToLower(rt.Method)].(map[string]any)
			if !ok {
				t.Fatalf("method %s missing under %s (has %v)", rt.Method, rt.Path, keys(p))
			}
			if op["summary"] != rt.Summary || rt.Summary == "" {
				t.Errorf("summary = %v, want %q", op["summary"], rt.Summary)
			}
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Error("no operationId")
			} else if prev, dup := opIDs[id]; dup {
				t.Errorf("operationId %q used by %s too", id, prev)
			}
			opIDs[id] = key

			resp, _ := op["responses"].(map[string]any)
			if _, ok := resp["default"]; !ok {
				t.Error("no default (error) response")
			}
			switch {
			case rt.Stream != nil:
				if _, ok := resp["200"]; !ok {
					t.Errorf("stream route: responses %v lack 200", keys(resp))
				}
			case rt.Async:
				if _, ok := resp["202"]; !ok {
					t.Errorf("async route: responses %v lack 202", keys(resp))
				}
				// 200 is the follow=1 answer: the task's log as text.
				if r200, _ := resp["200"].(map[string]any); r200 == nil {
					t.Error("async route does not document follow's 200")
				} else if ct, _ := r200["content"].(map[string]any); ct["text/plain"] == nil || len(ct) != 1 {
					t.Errorf("async route's 200 content %v, want text/plain only", keys(ct))
				}
				params, _ := op["parameters"].([]any)
				if !slices.ContainsFunc(params, func(p any) bool {
					m, _ := p.(map[string]any)
					return m["name"] == "follow" && m["in"] == "query"
				}) {
					t.Error("async route does not document the follow query parameter")
				}
				var refs []string
				collectRefs(resp["202"], &refs)
				if len(refs) != 1 || refs[0] != "#/components/schemas/Accepted" {
					t.Errorf("202 refs = %v, want the Accepted schema", refs)
				}
			default:
				if _, ok := resp["200"]; !ok {
					t.Errorf("responses %v lack 200", keys(resp))
				}
			}
			if rt.Body != nil {
				rb, _ := op["requestBody"].(map[string]any)
				var refs []string
				collectRefs(rb, &refs)
				want := "#/components/schemas/" + reflect.TypeOf(rt.Body).Name()
				if len(refs) != 1 || refs[0] != want {
					t.Errorf("requestBody refs = %v, want [%s]", refs, want)
				}
			} else if _, ok := op["requestBody"]; ok {
				t.Error("route without body documents a requestBody")
			}

			// Path parameters are documented and required.
			params, _ := op["parameters"].([]any)
			for _, pp := range pathParams(rt.Path) {
				found := false
				for _, x := range params {
					m := x.(map[string]any)
					if m["name"] == pp && m["in"] == "path" && m["required"] == true {
						found = true
					}
				}
				if !found {
					t.Errorf("path parameter %q not documented as required", pp)
				}
			}

			sec, hasSec := op["security"]
			role, hasRole := op["x-berth-role"]
			if rt.Role == Public {
				if !hasSec {
					t.Error("public route has no security override")
				} else if l, ok := sec.([]any); !ok || len(l) != 0 {
					t.Errorf("public route security = %v, want []", sec)
				}
				if hasRole {
					t.Errorf("public route has x-berth-role %v", role)
				}
			} else {
				if hasSec {
					t.Errorf("non-public route overrides security: %v", sec)
				}
				switch role {
				case wire.RoleAuditor, wire.RoleOperator, wire.RoleAdmin:
				default:
					t.Errorf("x-berth-role = %v (present %v), want a role", role, hasRole)
				}
				if role != rt.Role {
					t.Errorf("x-berth-role = %v, route role %q", role, rt.Role)
				}
			}
		})
	}

	// Every $ref resolves.
	var refs []string
	collectRefs(doc, &refs)
	if len(refs) == 0 {
		t.Fatal("no $ref at all")
	}
	for _, r := range refs {
		name, ok := strings.CutPrefix(r, "#/components/schemas/")
		if !ok {
			t.Errorf("$ref %q does not point into components.schemas", r)
			continue
		}
		if _, ok := schemas[name]; !ok {
			t.Errorf("$ref %q does not resolve", r)
		}
	}

	// Global security names the two schemes.
	schemes, _ := comps["securitySchemes"].(map[string]any)
	for _, n := range []string{"token", "ticket"} {
		if _, ok := schemes[n]; !ok {
			t.Errorf("securitySchemes lacks %s", n)
		}
	}
	if ticket, _ := schemes["ticket"].(map[string]any); ticket["name"] != CookieName {
		t.Errorf("ticket scheme = %v, want cookie %s", ticket, CookieName)
	}
}

// TestOpenAPISchemas checks a few schemas against the Go types.
func TestOpenAPISchemas(t *testing.T) {
	doc := decodeJSON[map[string]any](t, realServer(t).OpenAPIDocument())
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	tests := []struct {
		schema   string
		props    []string
		required []string
	}{
		{"UserCreate", []string{"comment", "name", "password", "role"}, []string{"name", "password", "role"}},
		{"Guest", []string{"config", "digest", "id", "kind", "name", "onboot", "startup", "status"}, []string{"id", "kind"}},
		{"NodeConfigUpdate", []string{"delete", "description", "digest", "startall-onboot-delay", "wakeonlan"}, nil},
		{"ErrorBody", []string{"error"}, []string{"error"}},
		{"Error", []string{"code", "fields", "message", "status"}, []string{"code", "message", "status"}},
	}
	for _, tc := range tests {
		s, ok := schemas[tc.schema].(map[string]any)
		if !ok {
			t.Errorf("no schema %s", tc.schema)
			continue
		}
		props, _ := s["properties"].(map[string]any)
		if got := keys(props); !reflect.DeepEqual(got, tc.props) {
			t.Errorf("%s properties = %v, want %v", tc.schema, got, tc.props)
		}
		var req []string
		if r, ok := s["required"].([]any); ok {
			for _, x := range r {
				req = append(req, x.(string))
			}
		}
		if !reflect.DeepEqual(req, tc.required) {
			t.Errorf("%s required = %v, want %v", tc.schema, req, tc.required)
		}
	}
}

// TestOpenAPIRouteServed checks that the server answers the document without
// credentials and with JSON, and that unknown paths get a JSON 404.
func TestOpenAPIRouteServed(t *testing.T) {
	s := realServer(t)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if rec.Body.String() != string(s.OpenAPIDocument()) {
		t.Error("served document differs from OpenAPIDocument")
	}

	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("unknown path: status %d", rec.Code)
	}
	body := decodeJSON[wire.ErrorBody](t, rec.Body.Bytes())
	if body.Error.Status != 404 || body.Error.Code != "not_found" {
		t.Errorf("unknown path body %+v", body)
	}
}

// TestOpenAPIDuplicateRoute checks that a duplicate route is refused.
func TestOpenAPIDuplicateRoute(t *testing.T) {
	h := func(*Request) (any, error) { return nil, nil }
	_, err := OpenAPI("v", []Route{
		{Method: "GET", Path: "/api/v1/x", Role: Public, Handle: h},
		{Method: "GET", Path: "/api/v1/x", Role: Public, Handle: h},
	})
	if err == nil || !strings.Contains(err.Error(), "duplicate route") {
		t.Fatalf("OpenAPI with a duplicate = %v, want a duplicate route error", err)
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
