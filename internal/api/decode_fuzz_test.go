package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	wire "github.com/berthhq/berth/api"
)

// bodyTypes returns every request body type of the real route table, so a
// route added later is fuzzed without touching this file.
func bodyTypes(t testing.TB) []reflect.Type {
	t.Helper()
	seen := map[reflect.Type]bool{}
	var out []reflect.Type
	for _, rt := range (&Services{}).Routes() {
		if rt.Body == nil {
			continue
		}
		typ := reflect.TypeOf(rt.Body)
		if !seen[typ] {
			seen[typ] = true
			out = append(out, typ)
		}
	}
	// The types the brief names must all be among them.
	for _, want := range []any{wire.UserCreate{}, wire.TokenCreate{}, wire.LoginRequest{}, wire.NodeConfigUpdate{},
		wire.GuestConfigUpdate{}, wire.Guest{}, wire.WakeOnLANRequest{}, wire.BulkRequest{}} {
		if !seen[reflect.TypeOf(want)] {
			t.Fatalf("route table has no route with body %T", want)
		}
	}
	return out
}

// checkDecodeError asserts the error contract of DecodeBody.
func checkDecodeError(t *testing.T, typ reflect.Type, data []byte, err error) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) {
		t.Fatalf("%v: DecodeBody(%.80q) error %T %v is not a *api.Error", typ, data, err, err)
	}
	switch we.Status {
	case http.StatusBadRequest:
		if we.Code != "invalid" {
			t.Errorf("%v: status 400 with code %q, want invalid", typ, we.Code)
		}
		if len(data) > MaxBody {
			t.Errorf("%v: %d-byte body got 400, want 413", typ, len(data))
		}
	case http.StatusRequestEntityTooLarge:
		if we.Code != "too_large" {
			t.Errorf("%v: status 413 with code %q, want too_large", typ, we.Code)
		}
		if len(data) <= MaxBody {
			t.Errorf("%v: %d-byte body got 413, limit is %d", typ, len(data), MaxBody)
		}
	default:
		t.Fatalf("%v: DecodeBody(%.80q) status %d (%q), want 400 or 413", typ, data, we.Status, we.Message)
	}
	if strings.TrimSpace(we.Message) == "" {
		t.Errorf("%v: DecodeBody(%.80q) error has an empty message", typ, data)
	}
}

// checkDecode decodes data into a fresh value of typ and checks either the
// error contract or a stable round trip.
func checkDecode(t *testing.T, typ reflect.Type, data []byte) {
	t.Helper()
	v := reflect.New(typ).Interface()
	err := DecodeBody(bytes.NewReader(data), v)
	if err != nil {
		checkDecodeError(t, typ, data, err)
		return
	}
	if len(data) > MaxBody {
		t.Fatalf("%v: %d-byte body accepted, limit is %d", typ, len(data), MaxBody)
	}
	if !json.Valid(data) {
		// An accepted body must be exactly one JSON value.
		t.Fatalf("%v: DecodeBody accepted %.200q, which is not one JSON value", typ, data)
	}
	enc, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%v: re-encode %+v: %v", typ, v, err)
	}
	v2 := reflect.New(typ).Interface()
	if err := DecodeBody(bytes.NewReader(enc), v2); err != nil {
		t.Fatalf("%v: decoding the re-encoded value %s failed: %v (input %.200q)", typ, enc, err, data)
	}
	// An empty map or slice is omitted on encoding and comes back nil.
	if d := cmp.Diff(v, v2, cmpopts.EquateEmpty()); d != "" {
		t.Fatalf("%v: round trip changed the value (-first +second):\n%s\ninput %.200q, re-encoded %s", typ, d, data, enc)
	}
}

func FuzzDecodeBody(f *testing.F) {
	seeds := []string{
		// Valid bodies of each type.
		`{"name":"alice","password":"correct horse","role":"operator","comment":"ops"}`,
		`{"name":"ci","role":"auditor","comment":"x","expire":4102444800}`,
		`{"username":"alice@berth","password":"pw"}`,
		`{"description":"rack 3","wakeonlan":"aa:bb:cc:dd:ee:ff","startall-onboot-delay":10,"delete":["description"],"digest":"abc"}`,
		`{"name":"web","onboot":true,"startup":{"order":1,"up":2,"down":3},"config":{"memory":"512"},"delete":["net0"],"digest":"d"}`,
		`{"id":100,"kind":"container","name":"web","onboot":true,"startup":{"order":2},"config":{"memory":"512","cores":"2"}}`,
		`{"target":"aa:bb:cc:dd:ee:ff","interface":"eth0"}`,
		`{"force":true,"timeout":30,"onboot-delay":true}`,
		`{"password":"secret123","role":"admin","comment":"","enabled":false}`,
		`{}`, `  {}  `, `null`, `{"config":{},"delete":[]}`,
		// Unknown fields and wrong types.
		`{"name":"a","bogus":1}`, `{"startup":{"order":1,"later":2}}`,
		`{"name":5}`, `{"id":"100"}`, `{"startup":{"order":"first"}}`, `{"force":"yes"}`,
		`{"expire":1e400}`, `{"timeout":-1}`, `{"timeout":1.5}`, `[]`, `"str"`, `42`, `true`,
		// Two values, trailing garbage, broken JSON.
		`{} {}`, `{}{}`, `{"a":1}]`, `{}}`, `{"name":"a"`, `{"name":"\ud800"}`, "{\"name\":\"\xff\"}",
		`{"NAME":"case"}`, `{"name":"a","name":"b"}`,
		// Empty.
		``, ` `, "\n\t",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(0))
	}
	// Huge bodies. They are not stored in the corpus as is: the fuzzer
	// would spend its time minimising megabyte inputs. Instead pad selects
	// whitespace padding: padToLimit makes the body exactly MaxBody bytes
	// (still accepted if the JSON is), padOverLimit one byte more (413).
	f.Add([]byte(`{"name":"alice","password":"12345678","role":"admin"}`), padToLimit)
	f.Add([]byte(`{"name":"alice","password":"12345678","role":"admin"}`), padOverLimit)
	f.Add([]byte(`{"name":`), padToLimit)
	f.Add([]byte(`{"comment":"xxxxxxxx"}`), padOverLimit)

	types := bodyTypes(f)
	f.Fuzz(func(t *testing.T, data []byte, pad uint8) {
		switch pad {
		case padToLimit, padOverLimit:
			if len(data) > MaxBody {
				return
			}
			n := MaxBody - len(data)
			if pad == padOverLimit {
				n++
			}
			padded := append(append([]byte(nil), data...), bytes.Repeat([]byte(" "), n)...)
			// Megabyte decodes are slow and the fuzzer minimises every
			// new input, so a padded input is tried with one type only.
			typ := types[len(data)%len(types)]
			checkDecode(t, typ, padded)
			if pad == padToLimit {
				// Trailing whitespace must not change the verdict.
				e1 := DecodeBody(bytes.NewReader(data), reflect.New(typ).Interface())
				e2 := DecodeBody(bytes.NewReader(padded), reflect.New(typ).Interface())
				if s1, s2 := errStatus(e1), errStatus(e2); s1 != s2 {
					t.Fatalf("%v: %.80q gives %d, padded to MaxBody %d", typ, data, s1, s2)
				}
			}
		default:
			for _, typ := range types {
				checkDecode(t, typ, data)
			}
		}
	})
}

const (
	padToLimit   uint8 = 0xFE
	padOverLimit uint8 = 0xFF
)

// errStatus is 0 for nil, else the status of an *api.Error (-1 otherwise).
func errStatus(err error) int {
	if err == nil {
		return 0
	}
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Status
	}
	return -1
}
