package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
)

// TestDaemonTLS checks that the served certificate chains to the CA in
// DATA/pki for the names clients use, and is the one in pki/berth-ssl.pem.
func TestDaemonTLS(t *testing.T) {
	e := startDaemon(t, shortTempDir(t))
	sslPEM, err := os.ReadFile(filepath.Join(e.dir, "pki", "berth-ssl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(sslPEM)
	if blk == nil {
		t.Fatal("pki/berth-ssl.pem holds no PEM block")
	}
	for _, tc := range []struct {
		name       string
		serverName string
		pool       *x509.CertPool
		wantErr    bool
	}{
		{"localhost", "localhost", e.pool, false},
		{"IP", "127.0.0.1", e.pool, false},
		{"node name", "itest", e.pool, false},
		{"other name", "example.com", e.pool, true},
		{"without the CA", "localhost", x509.NewCertPool(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr,
				&tls.Config{RootCAs: tc.pool, ServerName: tc.serverName, MinVersion: tls.VersionTLS12})
			if tc.wantErr {
				if err == nil {
					c.Close()
					t.Fatalf("handshake for %q succeeded, want a verification error", tc.serverName)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake for %q: %v", tc.serverName, err)
			}
			defer c.Close()
			st := c.ConnectionState()
			if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) != 2 {
				t.Fatalf("verified chains %v, want leaf and CA", st.VerifiedChains)
			}
			if !bytes.Equal(st.PeerCertificates[0].Raw, blk.Bytes) {
				t.Error("served certificate differs from pki/berth-ssl.pem")
			}
		})
	}
	// And over HTTP by name as well as by address.
	_, port, _ := net.SplitHostPort(e.addr)
	r := doCall(t, e.hc, "https://localhost:"+port, "GET", "/api/v1/version", nil, bearer(e.admin))
	v := data[wire.Version](t, r, 200)
	if v != (wire.Version{Version: "itest-version", Node: "itest", API: "v1"}) {
		t.Errorf("version = %+v", v)
	}
}

// TestDaemonAuthentication checks the 401s.
func TestDaemonAuthentication(t *testing.T) {
	e := startDaemon(t, shortTempDir(t))
	tests := []struct {
		name string
		cred cred
	}{
		{"no credentials", noCred},
		{"garbage bearer", bearer("garbage")},
		{"empty bearer", header("Authorization", "Bearer ")},
		{"not bearer", header("Authorization", "Basic cm9vdDpwdw==")},
		{"wrong secret", bearer("berth.root-admin.wrongsecret")},
		{"unknown token", bearer("berth.nobody." + strings.Repeat("A", 43))},
		{"forged cookie", cookie("BERTH:root@berth:66000000::c2lnbmF0dXJl")},
		{"garbage cookie", cookie("xyz")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, rq := range []struct{ method, path string }{
				{"GET", "/api/v1/node/status"},
				{"GET", "/api/v1/access/whoami"},
				{"POST", "/api/v1/node/startall"},
			} {
				r := e.call(t, rq.method, rq.path, nil, tc.cred)
				apiError(t, r, 401, "unauthenticated")
				if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
					t.Errorf("%s %s: WWW-Authenticate %q, want a Bearer challenge", rq.method, rq.path, got)
				}
			}
		})
	}
	// The admin token does work, so the 401s above are not a broken setup.
	id := data[wire.Identity](t, e.call(t, "GET", "/api/v1/access/whoami", nil, bearer(e.admin)), 200)
	if id != (wire.Identity{User: "token-root-admin@berth", Role: wire.RoleAdmin, Via: "token"}) {
		t.Errorf("whoami = %+v", id)
	}
}

// TestDaemonRoles checks role enforcement with API tokens.
func TestDaemonRoles(t *testing.T) {
	e := startDaemon(t, shortTempDir(t))
	auditor := e.createToken(t, "audit", wire.RoleAuditor)
	operator := e.createToken(t, "ops", wire.RoleOperator)

	// whoami tells each token's identity.
	for tok, want := range map[string]wire.Identity{
		auditor:  {User: "token-audit@berth", Role: wire.RoleAuditor, Via: "token"},
		operator: {User: "token-ops@berth", Role: wire.RoleOperator, Via: "token"},
	} {
		if got := data[wire.Identity](t, e.call(t, "GET", "/api/v1/access/whoami", nil, bearer(tok)), 200); got != want {
			t.Errorf("whoami = %+v, want %+v", got, want)
		}
	}

	t.Run("auditor reads node status", func(t *testing.T) {
		r := e.call(t, "GET", "/api/v1/node/status", nil, bearer(auditor))
		raw := data[map[string]json.RawMessage](t, r, 200)
		var host string
		if err := json.Unmarshal(raw["hostname"], &host); err != nil || host == "" {
			t.Fatalf("data.hostname = %s (%v), want a non-empty string; body %s", raw["hostname"], err, r.body)
		}
		want, _ := os.ReadFile("/proc/sys/kernel/hostname")
		if host != strings.TrimSpace(string(want)) {
			t.Errorf("hostname %q, want %q", host, strings.TrimSpace(string(want)))
		}
		st := data[wire.NodeStatus](t, r, 200)
		if st.BerthVersion != "itest-version" || st.Memory.Total == 0 || st.CPUInfo.CPUs == 0 {
			t.Errorf("node status %+v", st)
		}
	})

	forbidden := []struct {
		name, token, method, path string
		body                      any
	}{
		{"auditor changes node config", auditor, "PUT", "/api/v1/node/config", `{"description":"x"}`},
		{"auditor starts all", auditor, "POST", "/api/v1/node/startall", nil},
		{"auditor lists users", auditor, "GET", "/api/v1/access/users", nil},
		{"operator changes node config", operator, "PUT", "/api/v1/node/config", `{"description":"x"}`},
		{"operator creates a token", operator, "POST", "/api/v1/access/tokens", `{"name":"evil","role":"admin"}`},
		{"operator deletes the admin token", operator, "DELETE", "/api/v1/access/tokens/root-admin", nil},
	}
	for _, tc := range forbidden {
		t.Run(tc.name, func(t *testing.T) {
			er := apiError(t, e.call(t, tc.method, tc.path, tc.body, bearer(tc.token)), 403, "forbidden")
			if !strings.Contains(er.Message, "needs role") {
				t.Errorf("message %q does not say which role is needed", er.Message)
			}
		})
	}
	// None of the forbidden writes happened.
	if cfg := data[wire.NodeConfig](t, e.call(t, "GET", "/api/v1/node/config", nil, bearer(auditor)), 200); cfg != (wire.NodeConfig{}) {
		t.Errorf("node config changed by a forbidden request: %+v", cfg)
	}
	toks := data[[]wire.Token](t, e.call(t, "GET", "/api/v1/access/tokens", nil, bearer(e.admin)), 200)
	var names []string
	for _, tk := range toks {
		names = append(names, tk.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"audit", "ops", "root-admin"}) {
		t.Errorf("tokens = %v", names)
	}

	t.Run("operator starts all", func(t *testing.T) {
		acc := data[wire.Accepted](t, e.call(t, "POST", "/api/v1/node/startall", nil, bearer(operator)), 202)
		if !strings.HasPrefix(acc.UPID, "UPID:itest:") {
			t.Fatalf("upid %q, want UPID:itest:…", acc.UPID)
		}
		tk := e.waitTask(t, acc.UPID, bearer(auditor))
		if tk.Type != "startall" || tk.User != "token-ops@berth" || tk.Node != "itest" || tk.ExitStatus != wire.TaskOK {
			t.Errorf("task %+v", tk)
		}
	})

	t.Run("bad bodies", func(t *testing.T) {
		er := apiError(t, e.call(t, "POST", "/api/v1/node/startall", `{"force":true,"bogus":1}`, bearer(operator)), 400, "invalid")
		if _, ok := er.Fields["bogus"]; !ok {
			t.Errorf("fields %v do not name bogus", er.Fields)
		}
		er = apiError(t, e.call(t, "POST", "/api/v1/access/tokens", `{"name":"x","role":7}`, bearer(e.admin)), 400, "invalid")
		if _, ok := er.Fields["role"]; !ok {
			t.Errorf("fields %v do not name role", er.Fields)
		}
		big := `{"name":"big","role":"auditor","comment":"` + strings.Repeat("x", 1<<20) + `"}`
		apiError(t, e.call(t, "POST", "/api/v1/access/tokens", big, bearer(e.admin)), 413, "too_large")
		er = apiError(t, e.call(t, "POST", "/api/v1/access/tokens", `{"name":"Bad Name","role":"root"}`, bearer(e.admin)), 400, "invalid")
		if er.Fields["name"] == "" || er.Fields["role"] == "" {
			t.Errorf("fields %v, want name and role", er.Fields)
		}
		apiError(t, e.call(t, "POST", "/api/v1/access/tokens", `{"name":"ops","role":"auditor"}`, bearer(e.admin)), 409, "exists")
	})
}

// TestDaemonNodeConfigDigest checks optimistic locking of the node config.
func TestDaemonNodeConfigDigest(t *testing.T) {
	e := startDaemon(t, shortTempDir(t))
	adm := bearer(e.admin)

	c1 := data[wire.NodeConfig](t, e.call(t, "PUT", "/api/v1/node/config", `{"description":"rack 1","wakeonlan":"AA-BB-CC-DD-EE-FF"}`, adm), 200)
	if c1.Description != "rack 1" || c1.WakeOnLAN != "aa:bb:cc:dd:ee:ff" || len(c1.Digest) != 64 {
		t.Fatalf("first PUT answered %+v", c1)
	}
	got := data[wire.NodeConfig](t, e.call(t, "GET", "/api/v1/node/config", nil, adm), 200)
	if got != c1 {
		t.Fatalf("GET = %+v, want %+v", got, c1)
	}

	tests := []struct {
		name   string
		digest string
	}{
		{"made up digest", strings.Repeat("0", 64)},
		{"garbage digest", "stale"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"description": "rack 2", "digest": tc.digest}
			er := apiError(t, e.call(t, "PUT", "/api/v1/node/config", body, adm), 409, "conflict")
			if !strings.Contains(er.Message, "digest") {
				t.Errorf("message %q does not mention the digest", er.Message)
			}
			if after := data[wire.NodeConfig](t, e.call(t, "GET", "/api/v1/node/config", nil, adm), 200); after != c1 {
				t.Errorf("config changed by a stale PUT: %+v, want %+v", after, c1)
			}
		})
	}

	// With the current digest the change goes through; the old digest is
	// then stale.
	c2 := data[wire.NodeConfig](t, e.call(t, "PUT", "/api/v1/node/config", map[string]any{"description": "rack 2", "digest": c1.Digest}, adm), 200)
	if c2.Description != "rack 2" || c2.WakeOnLAN != c1.WakeOnLAN || c2.Digest == c1.Digest || c2.Digest == "" {
		t.Fatalf("PUT with the current digest answered %+v", c2)
	}
	apiError(t, e.call(t, "PUT", "/api/v1/node/config", map[string]any{"delete": []string{"description"}, "digest": c1.Digest}, adm), 409, "conflict")
	if after := data[wire.NodeConfig](t, e.call(t, "GET", "/api/v1/node/config", nil, adm), 200); after != c2 {
		t.Errorf("config = %+v, want %+v", after, c2)
	}
	// Invalid values are 400 with the field named, and change nothing.
	er := apiError(t, e.call(t, "PUT", "/api/v1/node/config", `{"startall-onboot-delay":9999,"delete":["bogus"]}`, adm), 400, "invalid")
	if er.Fields["startall-onboot-delay"] == "" || er.Fields["delete"] == "" {
		t.Errorf("fields %v, want startall-onboot-delay and delete", er.Fields)
	}
	if after := data[wire.NodeConfig](t, e.call(t, "GET", "/api/v1/node/config", nil, adm), 200); after != c2 {
		t.Errorf("config = %+v after an invalid PUT, want %+v", after, c2)
	}
}

// login posts to /access/ticket.
func (e *daemonEnv) login(t *testing.T, user, password string) response {
	t.Helper()
	return e.call(t, "POST", "/api/v1/access/ticket", wire.LoginRequest{Username: user, Password: password})
}

// TestDaemonTickets checks login tickets, the cookie and CSRF protection.
func TestDaemonTickets(t *testing.T) {
	e := startDaemon(t, shortTempDir(t))
	e.createUser(t, "alice", "alice-password", wire.RoleOperator)
	e.createUser(t, "carol", "carol-password", wire.RoleAdmin)

	type session struct{ ticket, csrf string }
	loginOK := func(t *testing.T, user, pw, role string) session {
		t.Helper()
		r := e.login(t, user, pw)
		tk := data[wire.Ticket](t, r, 200)
		if tk.Username != strings.TrimSuffix(user, "@berth")+"@berth" || tk.Role != role || tk.Ticket == "" || tk.CSRFPreventionToken == "" {
			t.Fatalf("ticket answer %+v", tk)
		}
		resp := http.Response{Header: r.header}
		var c *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == "BerthAuthCookie" {
				c = ck
			}
		}
		if c == nil {
			t.Fatalf("no BerthAuthCookie in Set-Cookie %q", r.header.Values("Set-Cookie"))
		}
		if !c.Secure || !c.HttpOnly || c.Value != tk.Ticket || c.Path != "/" || c.MaxAge <= 0 || c.SameSite != http.SameSiteStrictMode {
			t.Errorf("cookie %+v: want Secure, HttpOnly, SameSite=Strict, Path=/, MaxAge>0 and the ticket as value", c)
		}
		return session{tk.Ticket, tk.CSRFPreventionToken}
	}
	alice := loginOK(t, "alice", "alice-password", wire.RoleOperator)
	carol := loginOK(t, "carol@berth", "carol-password", wire.RoleAdmin)

	id := data[wire.Identity](t, e.call(t, "GET", "/api/v1/access/whoami", nil, cookie(alice.ticket)), 200)
	if id != (wire.Identity{User: "alice@berth", Role: wire.RoleOperator, Via: "ticket"}) {
		t.Errorf("whoami with cookie = %+v", id)
	}

	tests := []struct {
		name   string
		method string
		path   string
		body   any
		creds  []cred
		status int
		code   string // for errors
	}{
		{"GET needs no CSRF token", "GET", "/api/v1/node/config", nil, []cred{cookie(alice.ticket)}, 200, ""},
		{"PUT without CSRF token", "PUT", "/api/v1/node/config", `{"description":"x"}`, []cred{cookie(carol.ticket)}, 403, "csrf"},
		{"POST without CSRF token", "POST", "/api/v1/node/startall", nil, []cred{cookie(alice.ticket)}, 403, "csrf"},
		{"DELETE without CSRF token", "DELETE", "/api/v1/access/users/alice", nil, []cred{cookie(carol.ticket)}, 403, "csrf"},
		{"CSRF token of another user", "POST", "/api/v1/node/startall", nil, []cred{cookie(alice.ticket), header("CSRFPreventionToken", carol.csrf)}, 403, "csrf"},
		{"garbage CSRF token", "POST", "/api/v1/node/startall", nil, []cred{cookie(alice.ticket), header("CSRFPreventionToken", "00000000:abc")}, 403, "csrf"},
		{"operator with CSRF starts all", "POST", "/api/v1/node/startall", nil, []cred{cookie(alice.ticket), header("CSRFPreventionToken", alice.csrf)}, 202, ""},
		{"operator with CSRF may not change config", "PUT", "/api/v1/node/config", `{"description":"x"}`, []cred{cookie(alice.ticket), header("CSRFPreventionToken", alice.csrf)}, 403, "forbidden"},
		{"admin with CSRF changes config", "PUT", "/api/v1/node/config", `{"description":"by carol"}`, []cred{cookie(carol.ticket), header("CSRFPreventionToken", carol.csrf)}, 200, ""},
		{"tampered ticket", "GET", "/api/v1/access/whoami", nil, []cred{cookie(strings.Replace(alice.ticket, "alice", "carol", 1))}, 401, "unauthenticated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.call(t, tc.method, tc.path, tc.body, tc.creds...)
			if tc.code != "" {
				apiError(t, r, tc.status, tc.code)
				return
			}
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status == 202 {
				if acc := data[wire.Accepted](t, r, 202); !strings.HasSuffix(acc.UPID, ":startall::alice@berth:") {
					t.Errorf("upid %q is not a startall of alice@berth", acc.UPID)
				}
			}
		})
	}
	// Only carol's authorised PUT changed the config.
	if cfg := data[wire.NodeConfig](t, e.call(t, "GET", "/api/v1/node/config", nil, bearer(e.admin)), 200); cfg.Description != "by carol" {
		t.Errorf("config %+v, want carol's description", cfg)
	}
	// A disabled user's ticket stops working at once.
	data[wire.User](t, e.call(t, "PUT", "/api/v1/access/users/alice", `{"enabled":false}`, bearer(e.admin)), 200)
	apiError(t, e.call(t, "GET", "/api/v1/access/whoami", nil, cookie(alice.ticket)), 401, "unauthenticated")
	// A wrong password is a 401 with the challenge header.
	r := e.login(t, "carol", "not-carols-password")
	apiError(t, r, 401, "unauthenticated")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Error("failed login has no WWW-Authenticate header")
	}
	if len(r.header.Values("Set-Cookie")) != 0 {
		t.Errorf("failed login set cookies %q", r.header.Values("Set-Cookie"))
	}
}

// TestDaemonLoginRateLimit checks that repeated wrong passwords get 429.
func TestDaemonLoginRateLimit(t *testing.T) {
	e := startDaemon(t, shortTempDir(t))
	e.createUser(t, "dave", "dave-password", wire.RoleAuditor)
	var statuses []int
	for i := 1; i <= 7; i++ {
		r := e.login(t, "dave", "wrong-password")
		statuses = append(statuses, r.status)
		switch {
		case i <= 5:
			apiError(t, r, 401, "unauthenticated")
		default:
			apiError(t, r, 429, "rate_limited")
		}
	}
	t.Logf("statuses: %v", statuses)
	// While limited, even the right password is refused unchecked.
	apiError(t, e.login(t, "dave", "dave-password"), 429, "rate_limited")
	// Tokens are not affected.
	data[wire.Identity](t, e.call(t, "GET", "/api/v1/access/whoami", nil, bearer(e.admin)), 200)
}

// TestDaemonPublicRoutes checks what answers without credentials.
func TestDaemonPublicRoutes(t *testing.T) {
	e := startDaemon(t, shortTempDir(t))
	r := e.call(t, "GET", "/api/v1/openapi.json", nil)
	if r.status != 200 {
		t.Fatalf("openapi.json: status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("openapi.json Content-Type %q", ct)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Info    struct{ Version string }  `json:"info"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if doc.OpenAPI != "3.1.0" || doc.Info.Version != "itest-version" {
		t.Errorf("openapi %q version %q", doc.OpenAPI, doc.Info.Version)
	}
	if _, ok := doc.Paths["/api/v1/node/startall"]["post"]; !ok {
		t.Error("document lacks POST /api/v1/node/startall")
	}

	for _, tc := range []struct {
		name, method, path string
		cred               cred
	}{
		{"unknown API path", "GET", "/api/v1/nope", noCred},
		{"unknown API path with token", "GET", "/api/v1/nope", bearer(e.admin)},
		{"outside the API", "GET", "/index.html", noCred},
		{"unknown nested path", "POST", "/api/v1/node/status/extra", bearer(e.admin)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			er := apiError(t, e.call(t, tc.method, tc.path, nil, tc.cred), 404, "not_found")
			if !strings.Contains(er.Message, tc.path) {
				t.Errorf("message %q does not name the path", er.Message)
			}
		})
	}
	// Tasks and guests that do not exist are 404 too.
	apiError(t, e.call(t, "GET", "/api/v1/guests/4242", nil, bearer(e.admin)), 404, "not_found")
	apiError(t, e.call(t, "GET", "/api/v1/tasks/UPID:itest:00000001:00000001:00000001:startall::root@pam:", nil, bearer(e.admin)), 404, "not_found")
}

// TestDaemonTaskLogFollow checks that a task log streams live until the
// task ends, and that the task is listed by type.
func TestDaemonTaskLogFollow(t *testing.T) {
	drv := newFakeDriver()
	drv.gate = make(chan struct{}) // Start blocks until the test closes it
	e := startDaemon(t, shortTempDir(t), drv)
	e.createGuest(t, 100)
	operator := e.createToken(t, "ops", wire.RoleOperator)
	auditor := e.createToken(t, "audit", wire.RoleAuditor)

	acc := data[wire.Accepted](t, e.call(t, "POST", "/api/v1/node/startall", `{"force":true}`, bearer(operator)), 202)
	if !strings.HasPrefix(acc.UPID, "UPID:itest:") {
		t.Fatalf("upid %q", acc.UPID)
	}
	if _, err := recv(drv.started, 30*time.Second); err != nil {
		t.Fatal("the driver's Start was not called")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/api/v1/tasks/"+acc.UPID+"/log?follow=1", nil)
	bearer(auditor)(req)
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("follow: status %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("follow Content-Type %q, want text/plain", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	// The stream delivers the lines so far while the task still runs.
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), "fake: booting 100") {
			break
		}
	}
	if len(lines) == 0 || !strings.Contains(lines[len(lines)-1], "fake: booting 100") {
		t.Fatalf("stream ended before the boot line: %q (%v)", lines, sc.Err())
	}
	if tk := data[wire.Task](t, e.call(t, "GET", "/api/v1/tasks/"+acc.UPID, nil, bearer(auditor)), 200); tk.Status != wire.TaskRunning {
		t.Fatalf("task is %q while its driver is blocked, want running", tk.Status)
	}
	close(drv.gate)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the stream: %v (lines %q)", err, lines)
	}
	if len(lines) < 3 || lines[len(lines)-1] != "TASK OK" {
		t.Fatalf("stream lines %q, want them to end with TASK OK", lines)
	}
	if !slices.ContainsFunc(lines, func(s string) bool { return strings.Contains(s, "fake: 100 is up") }) {
		t.Errorf("stream lacks the line written after it started: %q", lines)
	}
	// The stream's trailer holds the task's final entry, so a waiting
	// client needs no further request.
	var final wire.Task
	if err := json.Unmarshal([]byte(resp.Trailer.Get(wire.TaskTrailer)), &final); err != nil {
		t.Errorf("trailer %s %q: %v", wire.TaskTrailer, resp.Trailer.Get(wire.TaskTrailer), err)
	} else if final.UPID != acc.UPID || final.Status != wire.TaskStopped || final.ExitStatus != wire.TaskOK {
		t.Errorf("trailer task %+v, want %s stopped OK", final, acc.UPID)
	}

	// The stored log, page-wise, has the same lines.
	lg := data[wire.TaskLog](t, e.call(t, "GET", "/api/v1/tasks/"+acc.UPID+"/log", nil, bearer(auditor)), 200)
	if lg.Running || !slices.Equal(lg.Lines, lines) || lg.Total != len(lines) {
		t.Errorf("log page %+v, want the %d streamed lines", lg, len(lines))
	}
	// Following a finished task replays it and ends.
	r := e.call(t, "GET", "/api/v1/tasks/"+acc.UPID+"/log?follow=1&start=1", nil, bearer(auditor))
	if r.status != 200 || string(r.body) != strings.Join(lines[1:], "\n")+"\n" {
		t.Errorf("follow of a finished task from line 1: %d %q", r.status, r.body)
	}

	ts := data[[]wire.Task](t, e.call(t, "GET", "/api/v1/tasks?type=startall", nil, bearer(auditor)), 200)
	if len(ts) != 1 || ts[0].UPID != acc.UPID || ts[0].Status != wire.TaskStopped || ts[0].ExitStatus != wire.TaskOK || ts[0].User != "token-ops@berth" {
		t.Errorf("tasks of type startall = %+v, want just %s, stopped OK", ts, acc.UPID)
	}
	// The filter filters: other types are not listed, and an unknown type
	// is an empty list, not null.
	r = e.call(t, "GET", "/api/v1/tasks?type=stopall", nil, bearer(auditor))
	if ts := data[[]wire.Task](t, r, 200); len(ts) != 0 || !bytes.Contains(r.body, []byte(`"data":[]`)) {
		t.Errorf("tasks of type stopall = %s, want an empty list", r.body)
	}
	all := data[[]wire.Task](t, e.call(t, "GET", "/api/v1/tasks", nil, bearer(auditor)), 200)
	// (Tasks started in the same second come in UPID order, so only the
	// set is checked.)
	var types []string
	for _, tk := range all {
		types = append(types, tk.Type)
	}
	slices.Sort(types)
	if !slices.Equal(types, []string{"startall", "umlcreate"}) {
		t.Errorf("all tasks = %+v, want startall and the earlier umlcreate", all)
	}
	apiError(t, e.call(t, "GET", "/api/v1/tasks?limit=x", nil, bearer(auditor)), 400, "invalid")
	apiError(t, e.call(t, "GET", "/api/v1/tasks/"+acc.UPID+"/log?follow=maybe", nil, bearer(auditor)), 400, "invalid")
}

// TestDaemonTaskStartFollow checks follow=1 on a route that starts a
// task: the answer is the task's log stream (UPID in a header, final
// entry in the trailer), one request where the CLI made two; bad input
// is refused before a task starts; and the Go client's RunTask uses it.
func TestDaemonTaskStartFollow(t *testing.T) {
	drv := newFakeDriver()
	e := startDaemon(t, shortTempDir(t), drv)
	e.createGuest(t, 100)
	operator := e.createToken(t, "ops", wire.RoleOperator)
	auditor := e.createToken(t, "audit", wire.RoleAuditor)
	tasks := func() int {
		return len(data[[]wire.Task](t, e.call(t, "GET", "/api/v1/tasks", nil, bearer(auditor)), 200))
	}
	before := tasks()

	// Refused before anything starts: a bad follow value, too low a role.
	apiError(t, e.call(t, "POST", "/api/v1/guests/100/status/start?follow=maybe", nil, bearer(operator)), 400, "invalid")
	apiError(t, e.call(t, "POST", "/api/v1/guests/100/status/start?follow=1", nil, bearer(auditor)), 403, "forbidden")
	if n := tasks(); n != before {
		t.Fatalf("%d tasks after refused requests, want %d", n, before)
	}

	r := e.call(t, "POST", "/api/v1/guests/100/status/start?follow=1", nil, bearer(operator))
	if r.status != 200 {
		t.Fatalf("start with follow: status %d: %s", r.status, r.body)
	}
	upid := r.header.Get(wire.TaskHeader)
	if !strings.HasPrefix(upid, "UPID:itest:") || !strings.Contains(upid, "start:100:") {
		t.Fatalf("%s header %q, want the start task's UPID", wire.TaskHeader, upid)
	}
	if loc := r.header.Get("Location"); loc != "/api/v1/tasks/"+url.PathEscape(upid) {
		t.Errorf("Location %q, want the task's URL", loc)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	lines := strings.Split(strings.TrimSuffix(string(r.body), "\n"), "\n")
	if len(lines) < 2 || !slices.ContainsFunc(lines, func(s string) bool { return strings.Contains(s, "fake: booting 100") }) || lines[len(lines)-1] != "TASK OK" {
		t.Fatalf("streamed log %q, want the boot line and TASK OK last", lines)
	}
	var final wire.Task
	if err := json.Unmarshal([]byte(r.trailer.Get(wire.TaskTrailer)), &final); err != nil {
		t.Fatalf("trailer %q: %v", r.trailer.Get(wire.TaskTrailer), err)
	}
	if final.UPID != upid || final.Status != wire.TaskStopped || final.ExitStatus != wire.TaskOK {
		t.Errorf("trailer task %+v, want %s stopped OK", final, upid)
	}
	if n := tasks(); n != before+1 {
		t.Errorf("%d tasks after the start, want %d", n, before+1)
	}
	// The log is the task's own: the same lines are stored.
	lg := data[wire.TaskLog](t, e.call(t, "GET", "/api/v1/tasks/"+upid+"/log", nil, bearer(auditor)), 200)
	if !slices.Equal(lg.Lines, lines) {
		t.Errorf("stored log %q, want the streamed %q", lg.Lines, lines)
	}

	// The Go client: the stop through RunTask, lines to emit, final entry
	// back; without follow the same route still answers 202.
	ca, err := os.ReadFile(filepath.Join(e.dir, "pki", "berth-root-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.NewHTTPS(e.base, operator, client.TLSOptions{CAPEM: ca})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []string
	tk, err := cl.RunTask(ctx, "POST", "/api/v1/guests/100/status/stop", nil, func(l string) { got = append(got, l) })
	if err != nil {
		t.Fatal(err)
	}
	if tk.ExitStatus != wire.TaskOK || tk.Status != wire.TaskStopped || len(got) == 0 || got[len(got)-1] != "TASK OK" {
		t.Errorf("RunTask stop: %+v, lines %q", tk, got)
	}
	if g := data[wire.Guest](t, e.call(t, "GET", "/api/v1/guests/100", nil, bearer(auditor)), 200); g.Status != wire.GuestStopped {
		t.Errorf("guest 100 is %q after the followed stop", g.Status)
	}
	data[wire.Accepted](t, e.call(t, "POST", "/api/v1/guests/100/status/start", nil, bearer(operator)), 202)
}

// TestDaemonUnixSocket checks the root-only socket.
func TestDaemonUnixSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the unix socket grants admin to root peers only; run as root")
	}
	e := startDaemon(t, shortTempDir(t))
	sock := filepath.Join(e.dir, "berth.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with mode 0600", fi.Mode())
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	id := data[wire.Identity](t, doCall(t, hc, "http://berth", "GET", "/api/v1/access/whoami", nil), 200)
	if id != (wire.Identity{User: "root@pam", Role: wire.RoleAdmin, Via: "unix"}) {
		t.Errorf("whoami over the socket = %+v", id)
	}
	// Admin rights without credentials, writes included, no CSRF needed.
	acc := data[wire.Accepted](t, doCall(t, hc, "http://berth", "POST", "/api/v1/node/startall", nil), 202)
	if !strings.HasSuffix(acc.UPID, ":startall::root@pam:") {
		t.Errorf("upid %q, want a startall of root@pam", acc.UPID)
	}
	data[wire.TokenSecret](t, doCall(t, hc, "http://berth", "POST", "/api/v1/access/tokens", `{"name":"viasock","role":"auditor"}`), 200)
	// The same request over TCP without credentials is refused.
	apiError(t, e.call(t, "GET", "/api/v1/access/whoami", nil), 401, "unauthenticated")

	// A second daemon on the same data dir refuses to start (the store's
	// lock stops it before it gets to the socket), and the socket stays.
	err = runUntilReady(t, e.dir)
	if err == nil || !strings.Contains(err.Error(), "another berth daemon") {
		t.Errorf("second daemon on a live data dir: %v, want an 'another berth daemon' error", err)
	}
	data[wire.Identity](t, doCall(t, hc, "http://berth", "GET", "/api/v1/access/whoami", nil), 200)
}

// runUntilReady runs a second daemon on dir and returns its error if it
// fails to start; if it starts, it is stopped and nil returned.
func runUntilReady(t *testing.T, dir string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- runDaemon(ctx, dir, func(a string) { ready <- a })
	}()
	select {
	case err := <-done:
		return err
	case <-ready:
		cancel()
		<-done
		return nil
	case <-time.After(30 * time.Second):
		t.Fatal("second daemon neither failed nor became ready")
		return nil
	}
}

// TestDaemonGracefulShutdown checks that cancelling Run stops it quickly
// and that a task it interrupted is recorded as stopped, not running.
func TestDaemonGracefulShutdown(t *testing.T) {
	dir := shortTempDir(t)
	drv := newFakeDriver()
	drv.gate = make(chan struct{}) // never closed: Start blocks until cancelled
	e := startDaemon(t, dir, drv)
	e.createGuest(t, 100)

	acc := data[wire.Accepted](t, e.call(t, "POST", "/api/v1/node/startall", `{"force":true}`, bearer(e.admin)), 202)
	if _, err := recv(drv.started, 30*time.Second); err != nil {
		t.Fatal("the driver's Start was not called")
	}
	running := data[[]wire.Task](t, e.call(t, "GET", "/api/v1/tasks?running=1", nil, bearer(e.admin)), 200)
	if len(running) != 1 || running[0].UPID != acc.UPID {
		t.Fatalf("running tasks %+v, want just %s", running, acc.UPID)
	}

	// ShutdownTimeout is 500ms: Run waits that long, then cancels the
	// task. stop fails if Run has not returned after 30 s, so Run did
	// not wait for the gate (never opened) or the 60 s default.
	if err := e.stop(t); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	// The listener is closed.
	if c, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Run returned", e.addr)
	}

	// Reopen the store with a second daemon and look at the task.
	e2 := startDaemon(t, dir, newFakeDriver())
	tk := data[wire.Task](t, e2.call(t, "GET", "/api/v1/tasks/"+acc.UPID, nil, bearer(e2.admin)), 200)
	if tk.Status != wire.TaskStopped {
		t.Fatalf("task after restart: %+v, want stopped", tk)
	}
	if !strings.Contains(tk.ExitStatus, "shutdown") || tk.EndTime < tk.StartTime {
		t.Errorf("task after restart: %+v, want exit status naming the daemon shutdown", tk)
	}
	lg := data[wire.TaskLog](t, e2.call(t, "GET", "/api/v1/tasks/"+acc.UPID+"/log", nil, bearer(e2.admin)), 200)
	if len(lg.Lines) == 0 || lg.Lines[len(lg.Lines)-1] != "TASK ERROR: "+tk.ExitStatus || lg.Running {
		t.Errorf("log after restart %+v, want it to end with TASK ERROR: %s", lg, tk.ExitStatus)
	}
	if !slices.Contains(lg.Lines, "received shutdown request") {
		t.Errorf("log %q lacks the shutdown request line", lg.Lines)
	}
	// The first daemon's admin token was replaced by the second's.
	apiError(t, e2.call(t, "GET", "/api/v1/access/whoami", nil, bearer(e.admin)), 401, "unauthenticated")
	if g := data[wire.Guest](t, e2.call(t, "GET", "/api/v1/guests/100", nil, bearer(e2.admin)), 200); g.ID != 100 || g.Kind != wire.GuestUML {
		t.Errorf("guest after restart %+v", g)
	}
}
