package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	wire "github.com/berthhq/berth/api"
)

// OpenAPI renders the OpenAPI 3.1 document for routes. Schemas come from the
// Go wire types by reflection, so the document cannot drift from the code.
func OpenAPI(version string, routes []Route) ([]byte, error) {
	g := &schemaGen{defs: map[string]any{}}
	paths := map[string]map[string]any{}
	for _, rt := range routes {
		op := map[string]any{
			"summary":     rt.Summary,
			"operationId": operationID(rt),
			"tags":        []string{tag(rt.Path)},
		}
		var params []any
		for _, p := range pathParams(rt.Path) {
			params = append(params, map[string]any{"name": p, "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, p := range rt.Params {
			if p.In == "path" {
				continue
			}
			params = append(params, map[string]any{"name": p.Name, "in": p.In, "description": p.Description, "schema": map[string]any{"type": p.Type}})
		}
		if rt.Async {
			params = append(params, map[string]any{"name": "follow", "in": "query", "schema": map[string]any{"type": "boolean"},
				"description": "answer with the started task's log stream (200, text/plain) instead of 202 and its UPID: one request to start a task and wait for it"})
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.Body != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(rt.Body))}}}
		}
		responses := map[string]any{}
		switch {
		case rt.Stream != nil:
			ct := rt.ContentType
			if ct == "" {
				ct = "application/octet-stream"
			}
			responses["200"] = map[string]any{"description": "stream", "content": map[string]any{ct: map[string]any{}}}
		case rt.Async:
			responses["202"] = map[string]any{"description": "task started; follow it with /api/v1/tasks/{upid}", "content": envelope(g.schema(reflect.TypeOf(wire.Accepted{})))}
			responses["200"] = map[string]any{"description": "with follow=1: task started, and this is its log (text/plain lines until the task ends; the UPID in the " + wire.TaskHeader + " header, the final task entry as JSON in the " + wire.TaskTrailer + " trailer)",
				"content": map[string]any{"text/plain": map[string]any{}}}
		default:
			var s any = map[string]any{"type": "object"}
			if rt.Resp != nil {
				s = g.schema(reflect.TypeOf(rt.Resp))
			}
			responses["200"] = map[string]any{"description": "success", "content": envelope(s)}
		}
		responses["default"] = map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/ErrorBody"}}}}
		op["responses"] = responses
		if rt.Role == Public {
			op["security"] = []any{}
		} else {
			op["x-berth-role"] = rt.Role
		}
		if paths[rt.Path] == nil {
			paths[rt.Path] = map[string]any{}
		}
		m := strings.ToLower(rt.Method)
		if _, dup := paths[rt.Path][m]; dup {
			return nil, fmt.Errorf("duplicate route %s %s", rt.Method, rt.Path)
		}
		paths[rt.Path][m] = op
	}
	g.schema(reflect.TypeOf(wire.ErrorBody{}))
	doc := map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "berth API", "version": version, "description": "REST API of the berth node daemon. Successful responses wrap their data as {\"data\": …}; failures answer {\"error\": {status, code, message, fields}}."},
		"paths":   paths,
		"components": map[string]any{
			"schemas": g.defs,
			"securitySchemes": map[string]any{
				"token":  map[string]any{"type": "http", "scheme": "bearer", "description": "API token: berth.NAME.SECRET"},
				"ticket": map[string]any{"type": "apiKey", "in": "cookie", "name": CookieName, "description": "login ticket; writes also need the CSRFPreventionToken header"},
			},
		},
		"security": []any{map[string]any{"token": []string{}}, map[string]any{"ticket": []string{}}},
	}
	return json.MarshalIndent(doc, "", "  ")
}

func envelope(s any) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": map[string]any{
		"type": "object", "required": []string{"data"}, "properties": map[string]any{"data": s},
	}}}
}

func pathParams(p string) []string {
	var out []string
	for _, seg := range strings.Split(p, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(seg, "{"), "}"))
		}
	}
	return out
}

func tag(p string) string {
	parts := strings.Split(strings.TrimPrefix(p, "/api/v1/"), "/")
	return parts[0]
}

func operationID(rt Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.Method))
	for _, seg := range strings.Split(strings.TrimPrefix(rt.Path, "/api/v1/"), "/") {
		seg = strings.Trim(seg, "{}")
		for _, w := range strings.FieldsFunc(seg, func(r rune) bool { return r == '-' || r == '.' || r == '_' }) {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return b.String()
}

type schemaGen struct{ defs map[string]any }

func (g *schemaGen) schema(t reflect.Type) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := schemaName(t)
		if _, ok := g.defs[name]; !ok {
			g.defs[name] = nil // break recursion
			props := map[string]any{}
			var required []string
			g.fields(t, props, &required)
			s := map[string]any{"type": "object", "properties": props}
			if len(required) > 0 {
				sort.Strings(required)
				s["required"] = required
			}
			g.defs[name] = s
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

func (g *schemaGen) fields(t reflect.Type, props map[string]any, required *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tagv := f.Tag.Get("json")
		if tagv == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tagv, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.fields(ft, props, required)
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.schema(f.Type)
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") && f.Type.Kind() != reflect.Pointer {
			*required = append(*required, name)
		}
	}
}

func schemaName(t reflect.Type) string {
	n := t.Name()
	if i := strings.IndexByte(n, '['); i >= 0 {
		n = n[:i]
	}
	if n == "" {
		return "Anonymous"
	}
	return n
}
