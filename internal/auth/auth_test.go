package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

func newService(t *testing.T) *Service {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(context.Background(), st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPasswordHash(t *testing.T) {
	h := HashPassword("correct horse")
	if !strings.HasPrefix(h, "$argon2id$v=19$") {
		t.Fatalf("hash %q is not PHC argon2id", h)
	}
	if !CheckPassword(h, "correct horse") {
		t.Error("right password refused")
	}
	for _, bad := range []string{"", "correct hors", "Correct horse"} {
		if CheckPassword(h, bad) {
			t.Errorf("wrong password %q accepted", bad)
		}
	}
	if HashPassword("x") == HashPassword("x") {
		t.Error("two hashes of one password are equal: salt missing")
	}
	if CheckPassword("$argon2id$junk", "x") {
		t.Error("malformed hash accepted")
	}
}

func TestRoles(t *testing.T) {
	tests := []struct {
		role, min string
		want      bool
	}{
		{api.RoleAdmin, api.RoleAdmin, true},
		{api.RoleAdmin, api.RoleAuditor, true},
		{api.RoleOperator, api.RoleAdmin, false},
		{api.RoleOperator, api.RoleOperator, true},
		{api.RoleAuditor, api.RoleOperator, false},
		{api.RoleAuditor, api.RoleAuditor, true},
		{"", api.RoleAuditor, false},
		{"root", api.RoleAuditor, false},
	}
	for _, tt := range tests {
		if got := Allows(tt.role, tt.min); got != tt.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tt.role, tt.min, got, tt.want)
		}
	}
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	sec, err := s.CreateToken(ctx, api.TokenCreate{Name: "ci", Role: api.RoleOperator})
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.AuthenticateToken(ctx, sec.Value)
	if err != nil {
		t.Fatal(err)
	}
	if id.Role != api.RoleOperator || id.User != "token-ci@berth" || id.Via != "token" {
		t.Fatalf("identity = %+v", id)
	}
	for _, bad := range []string{"", "berth.ci", "berth.ci.wrong", sec.Value + "x", strings.Replace(sec.Value, "ci", "cj", 1)} {
		if _, err := s.AuthenticateToken(ctx, bad); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("token %q: err = %v, want ErrUnauthenticated", bad, err)
		}
	}
	obj, err := s.st.Get(ctx, "auth/tokens/ci")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(obj.Value), strings.Split(sec.Value, ".")[2]) {
		t.Fatal("token secret stored in clear")
	}
	if _, err := s.CreateToken(ctx, api.TokenCreate{Name: "ci", Role: api.RoleAdmin}); !errors.Is(err, store.ErrExists) {
		t.Errorf("duplicate token: err = %v, want ErrExists", err)
	}
	var ve *ValidationError
	if _, err := s.CreateToken(ctx, api.TokenCreate{Name: "Bad Name", Role: "god"}); !errors.As(err, &ve) || len(ve.Fields) != 2 {
		t.Errorf("invalid token: err = %v, want 2 field errors", err)
	}
	if err := s.RemoveToken(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateToken(ctx, sec.Value); err == nil {
		t.Error("revoked token still accepted")
	}
	exp, _ := s.CreateToken(ctx, api.TokenCreate{Name: "short", Role: api.RoleAdmin, Expire: time.Now().Unix() + 60})
	s.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if _, err := s.AuthenticateToken(ctx, exp.Value); err == nil {
		t.Error("expired token accepted")
	}
}

func TestLoginTicketCSRF(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	if _, err := s.AddUser(ctx, api.UserCreate{Name: "alice", Password: "secret-pw", Role: api.RoleAuditor}); err != nil {
		t.Fatal(err)
	}
	tk, err := s.Login(ctx, "alice@berth", "secret-pw", "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.VerifyTicket(ctx, tk.Ticket)
	if err != nil || id.User != "alice@berth" || id.Role != api.RoleAuditor {
		t.Fatalf("VerifyTicket = %+v, %v", id, err)
	}
	if !s.VerifyCSRF("alice@berth", tk.CSRFPreventionToken) {
		t.Error("CSRF token refused")
	}
	if s.VerifyCSRF("bob@berth", tk.CSRFPreventionToken) {
		t.Error("CSRF token of alice accepted for bob")
	}
	forged := strings.Replace(tk.Ticket, "alice", "admin", 1)
	if _, err := s.VerifyTicket(ctx, forged); err == nil {
		t.Error("forged ticket accepted")
	}
	// A role change applies to existing tickets.
	admin := api.RoleAdmin
	if _, err := s.UpdateUser(ctx, "alice", api.UserUpdate{Role: &admin}); err != nil {
		t.Fatal(err)
	}
	if id, _ := s.VerifyTicket(ctx, tk.Ticket); id.Role != api.RoleAdmin {
		t.Errorf("role after update = %q, want admin", id.Role)
	}
	s.now = func() time.Time { return time.Now().Add(TicketLifetime + time.Minute) }
	if _, err := s.VerifyTicket(ctx, tk.Ticket); err == nil {
		t.Error("expired ticket accepted")
	}
	s.now = time.Now
	if err := s.RemoveUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyTicket(ctx, tk.Ticket); err == nil {
		t.Error("ticket of removed user accepted")
	}
}

func TestLoginRateLimit(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	if _, err := s.AddUser(ctx, api.UserCreate{Name: "bob", Password: "right-password", Role: api.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := s.Login(ctx, "bob", "wrong", "198.51.100.7"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("attempt %d: err = %v, want ErrBadCredentials", i, err)
		}
	}
	if _, err := s.Login(ctx, "bob", "right-password", "198.51.100.8"); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("after 5 failures: err = %v, want ErrRateLimited even with the right password", err)
	}
	s.now = func() time.Time { return time.Now().Add(6 * time.Minute) }
	if _, err := s.Login(ctx, "bob", "right-password", "198.51.100.8"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

func TestUserValidation(t *testing.T) {
	s := newService(t)
	var ve *ValidationError
	_, err := s.AddUser(context.Background(), api.UserCreate{Name: "x y", Password: "short", Role: "boss"})
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want ValidationError", err)
	}
	for _, f := range []string{"name", "password", "role"} {
		if ve.Fields[f] == "" {
			t.Errorf("no error for field %s: %v", f, ve.Fields)
		}
	}
}
