package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

// Errors the API maps to 401, 403 and 429.
var (
	ErrUnauthenticated = errors.New("authentication required: send 'Authorization: Bearer <token>' or log in for a ticket")
	ErrBadCredentials  = errors.New("authentication failure: wrong user name or password")
	ErrForbidden       = errors.New("permission denied")
	ErrRateLimited     = errors.New("too many failed logins: wait a few minutes before trying again")
)

// Realm is appended to local user names in identities and task records.
const Realm = "berth"

// TicketLifetime is how long a login ticket is valid, as in Proxmox.
const TicketLifetime = 2 * time.Hour

var rank = map[string]int{api.RoleAuditor: 1, api.RoleOperator: 2, api.RoleAdmin: 3}

// ValidRole reports whether r names a role.
func ValidRole(r string) bool { return rank[r] > 0 }

// Allows reports whether a caller with role has at least role min.
func Allows(role, min string) bool { return rank[role] >= rank[min] && rank[role] > 0 }

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// ValidName checks a user or token name: lower-case letter first, then
// lower-case letters, digits, '-' or '_', at most 64 characters.
func ValidName(n string) error {
	if !nameRE.MatchString(n) {
		return fmt.Errorf("name %q is not valid: use a lower-case letter followed by up to 63 lower-case letters, digits, '-' or '_'", n)
	}
	return nil
}

type userRecord struct {
	api.User
	Hash string `json:"hash"`
}

type tokenRecord struct {
	api.Token
	SecretSHA256 string `json:"secret_sha256"`
}

type keys struct {
	Ticket []byte `json:"ticket"`
	CSRF   []byte `json:"csrf"`
}

// Service answers authentication questions. It is safe for concurrent use.
type Service struct {
	st      store.Store
	log     *slog.Logger
	keys    keys
	now     func() time.Time
	limiter *limiter
}

// New loads (or on first start creates) the signing keys and returns the
// service.
func New(ctx context.Context, st store.Store, log *slog.Logger) (*Service, error) {
	s := &Service{st: st, log: log, now: time.Now, limiter: newLimiter(5, 5*time.Minute)}
	k, _, err := store.GetJSON[keys](ctx, st, "auth/keys")
	if errors.Is(err, store.ErrNotFound) {
		k = keys{Ticket: random(32), CSRF: random(32)}
		if _, err := store.PutJSON(ctx, st, "auth/keys", k, store.Cond{Create: true}); err != nil && !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("store auth keys: %w", err)
		}
		k, _, err = store.GetJSON[keys](ctx, st, "auth/keys")
	}
	if err != nil {
		return nil, fmt.Errorf("load auth keys: %w", err)
	}
	s.keys = k
	return s, nil
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return b
}

// Argon2id parameters (OWASP's recommended minimum).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword returns a PHC-format argon2id hash of password.
func HashPassword(password string) string {
	salt := random(16)
	sum := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, enc.EncodeToString(salt), enc.EncodeToString(sum))
}

// CheckPassword reports whether password matches a hash from HashPassword.
func CheckPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[4])
	want, err2 := enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// ValidationError lists per-field problems of a request.
type ValidationError struct{ Fields map[string]string }

func (e *ValidationError) Error() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(e.Fields)) {
		parts = append(parts, k+": "+e.Fields[k])
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

func validateUser(name, password, role string) error {
	f := map[string]string{}
	if err := ValidName(name); err != nil {
		f["name"] = err.Error()
	}
	if len(password) < 8 {
		f["password"] = "must have at least 8 characters"
	}
	if !ValidRole(role) {
		f["role"] = fmt.Sprintf("%q is not a role: use admin, operator or auditor", role)
	}
	if len(f) > 0 {
		return &ValidationError{Fields: f}
	}
	return nil
}

// AddUser creates a local user.
func (s *Service) AddUser(ctx context.Context, in api.UserCreate) (api.User, error) {
	if err := validateUser(in.Name, in.Password, in.Role); err != nil {
		return api.User{}, err
	}
	rec := userRecord{User: api.User{Name: in.Name, Role: in.Role, Comment: in.Comment, Enabled: true, Created: s.now().Unix()}, Hash: HashPassword(in.Password)}
	if _, err := store.PutJSON(ctx, s.st, "auth/users/"+in.Name, rec, store.Cond{Create: true}); err != nil {
		return api.User{}, fmt.Errorf("add user %s: %w", in.Name, err)
	}
	s.log.Info("user added", "user", in.Name, "role", in.Role)
	return rec.User, nil
}

// UpdateUser changes a user's password, role, comment or enabled flag.
func (s *Service) UpdateUser(ctx context.Context, name string, in api.UserUpdate) (api.User, error) {
	rec, digest, err := store.GetJSON[userRecord](ctx, s.st, "auth/users/"+name)
	if err != nil {
		return api.User{}, fmt.Errorf("user %s: %w", name, err)
	}
	if in.Password != nil {
		if err := validateUser(name, *in.Password, rec.Role); err != nil {
			return api.User{}, err
		}
		rec.Hash = HashPassword(*in.Password)
	}
	if in.Role != nil {
		if !ValidRole(*in.Role) {
			return api.User{}, &ValidationError{Fields: map[string]string{"role": fmt.Sprintf("%q is not a role: use admin, operator or auditor", *in.Role)}}
		}
		rec.Role = *in.Role
	}
	if in.Comment != nil {
		rec.Comment = *in.Comment
	}
	if in.Enabled != nil {
		rec.Enabled = *in.Enabled
	}
	if _, err := store.PutJSON(ctx, s.st, "auth/users/"+name, rec, store.Cond{Digest: digest}); err != nil {
		return api.User{}, fmt.Errorf("update user %s: %w", name, err)
	}
	return rec.User, nil
}

// RemoveUser deletes a local user.
func (s *Service) RemoveUser(ctx context.Context, name string) error {
	if err := s.st.Delete(ctx, "auth/users/"+name, store.Cond{}); err != nil {
		return fmt.Errorf("remove user %s: %w", name, err)
	}
	return nil
}

// Users lists local users.
func (s *Service) Users(ctx context.Context) ([]api.User, error) {
	recs, err := store.ListJSON[userRecord](ctx, s.st, "auth/users/")
	if err != nil {
		return nil, err
	}
	out := make([]api.User, len(recs))
	for i, r := range recs {
		out[i] = r.User
	}
	return out, nil
}

// CreateToken makes an API token and returns its secret, which is not stored
// and cannot be shown again.
func (s *Service) CreateToken(ctx context.Context, in api.TokenCreate) (api.TokenSecret, error) {
	f := map[string]string{}
	if err := ValidName(in.Name); err != nil {
		f["name"] = err.Error()
	}
	if !ValidRole(in.Role) {
		f["role"] = fmt.Sprintf("%q is not a role: use admin, operator or auditor", in.Role)
	}
	if in.Expire != 0 && in.Expire <= s.now().Unix() {
		f["expire"] = "lies in the past"
	}
	if len(f) > 0 {
		return api.TokenSecret{}, &ValidationError{Fields: f}
	}
	secret := base64.RawURLEncoding.EncodeToString(random(32))
	rec := tokenRecord{Token: api.Token{Name: in.Name, Role: in.Role, Comment: in.Comment, Created: s.now().Unix(), Expire: in.Expire}, SecretSHA256: sha(secret)}
	if _, err := store.PutJSON(ctx, s.st, "auth/tokens/"+in.Name, rec, store.Cond{Create: true}); err != nil {
		return api.TokenSecret{}, fmt.Errorf("create token %s: %w", in.Name, err)
	}
	s.log.Info("API token created", "token", in.Name, "role", in.Role)
	return api.TokenSecret{Token: rec.Token, Value: "berth." + in.Name + "." + secret}, nil
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// RemoveToken revokes a token.
func (s *Service) RemoveToken(ctx context.Context, name string) error {
	if err := s.st.Delete(ctx, "auth/tokens/"+name, store.Cond{}); err != nil {
		return fmt.Errorf("remove token %s: %w", name, err)
	}
	return nil
}

// Tokens lists tokens without their secrets.
func (s *Service) Tokens(ctx context.Context) ([]api.Token, error) {
	recs, err := store.ListJSON[tokenRecord](ctx, s.st, "auth/tokens/")
	if err != nil {
		return nil, err
	}
	out := make([]api.Token, len(recs))
	for i, r := range recs {
		out[i] = r.Token
	}
	return out, nil
}

// TokenUser is the user name under which a token's actions are recorded.
func TokenUser(name string) string { return "token-" + name + "@" + Realm }

// AuthenticateToken checks a bearer value "berth.NAME.SECRET".
func (s *Service) AuthenticateToken(ctx context.Context, value string) (api.Identity, error) {
	parts := strings.SplitN(value, ".", 3)
	if len(parts) != 3 || parts[0] != "berth" || ValidName(parts[1]) != nil {
		return api.Identity{}, fmt.Errorf("%w: malformed token (want berth.NAME.SECRET)", ErrUnauthenticated)
	}
	rec, _, err := store.GetJSON[tokenRecord](ctx, s.st, "auth/tokens/"+parts[1])
	if err != nil || subtle.ConstantTimeCompare([]byte(rec.SecretSHA256), []byte(sha(parts[2]))) != 1 {
		s.log.Warn("authentication failure", "token", parts[1], "msg", "unknown token or wrong secret")
		return api.Identity{}, fmt.Errorf("%w: unknown token or wrong secret", ErrUnauthenticated)
	}
	if rec.Expire != 0 && s.now().Unix() > rec.Expire {
		return api.Identity{}, fmt.Errorf("%w: token %s expired", ErrUnauthenticated, rec.Name)
	}
	return api.Identity{User: TokenUser(rec.Name), Role: rec.Role, Via: "token"}, nil
}

// Login checks a password and returns a ticket and CSRF token. Failed
// attempts are logged and, past five in five minutes for one user or one
// remote address, refused with ErrRateLimited without checking.
func (s *Service) Login(ctx context.Context, username, password, remote string) (api.Ticket, error) {
	name := strings.TrimSuffix(username, "@"+Realm)
	now := s.now()
	if !s.limiter.allow(now, "user:"+name) || !s.limiter.allow(now, "addr:"+remote) {
		s.log.Warn("authentication failure", "user", username, "rhost", remote, "msg", "rate limited")
		return api.Ticket{}, ErrRateLimited
	}
	rec, _, err := store.GetJSON[userRecord](ctx, s.st, "auth/users/"+name)
	ok := err == nil && rec.Enabled && CheckPassword(rec.Hash, password)
	if err != nil {
		CheckPassword(HashPassword("x"), password) // spend the same time for unknown users
	}
	if !ok {
		s.limiter.fail(now, "user:"+name)
		s.limiter.fail(now, "addr:"+remote)
		s.log.Warn("authentication failure", "user", username, "rhost", remote)
		return api.Ticket{}, ErrBadCredentials
	}
	s.limiter.reset("user:" + name)
	user := name + "@" + Realm
	t := s.ticket(user, now)
	s.log.Info("login", "user", user, "rhost", remote)
	return api.Ticket{Username: user, Role: rec.Role, Ticket: t, CSRFPreventionToken: s.csrf(user, now)}, nil
}

func (s *Service) sign(key []byte, msg string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Service) ticket(user string, at time.Time) string {
	plain := fmt.Sprintf("BERTH:%s:%08X", user, at.Unix())
	return plain + "::" + s.sign(s.keys.Ticket, plain)
}

func (s *Service) csrf(user string, at time.Time) string {
	ts := fmt.Sprintf("%08X", at.Unix())
	return ts + ":" + s.sign(s.keys.CSRF, ts+":"+user)
}

// VerifyTicket checks a ticket's signature and age, and that its user still
// exists and is enabled; the role is the user's current one.
func (s *Service) VerifyTicket(ctx context.Context, ticket string) (api.Identity, error) {
	plain, sig, ok := strings.Cut(ticket, "::")
	parts := strings.Split(plain, ":")
	if !ok || len(parts) != 3 || parts[0] != "BERTH" || !hmac.Equal([]byte(sig), []byte(s.sign(s.keys.Ticket, plain))) {
		return api.Identity{}, fmt.Errorf("%w: invalid ticket", ErrUnauthenticated)
	}
	ts, err := strconv.ParseInt(parts[2], 16, 64)
	if err != nil || s.now().Sub(time.Unix(ts, 0)) > TicketLifetime || time.Unix(ts, 0).After(s.now().Add(5*time.Minute)) {
		return api.Identity{}, fmt.Errorf("%w: ticket expired, log in again", ErrUnauthenticated)
	}
	name := strings.TrimSuffix(parts[1], "@"+Realm)
	rec, _, err := store.GetJSON[userRecord](ctx, s.st, "auth/users/"+name)
	if err != nil || !rec.Enabled {
		return api.Identity{}, fmt.Errorf("%w: user %s no longer exists or is disabled", ErrUnauthenticated, parts[1])
	}
	return api.Identity{User: parts[1], Role: rec.Role, Via: "ticket"}, nil
}

// VerifyCSRF checks a CSRF prevention token for user.
func (s *Service) VerifyCSRF(user, token string) bool {
	ts, sig, ok := strings.Cut(token, ":")
	if !ok {
		return false
	}
	t, err := strconv.ParseInt(ts, 16, 64)
	if err != nil || s.now().Sub(time.Unix(t, 0)) > TicketLifetime {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(s.sign(s.keys.CSRF, ts+":"+user)))
}

// limiter counts failures per key in a sliding window.
type limiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	fails  map[string][]time.Time
}

func newLimiter(max int, window time.Duration) *limiter {
	return &limiter{max: max, window: window, fails: map[string][]time.Time{}}
}

func (l *limiter) prune(now time.Time, key string) []time.Time {
	f := l.fails[key]
	i := 0
	for i < len(f) && now.Sub(f[i]) > l.window {
		i++
	}
	f = f[i:]
	if len(f) == 0 {
		delete(l.fails, key)
	} else {
		l.fails[key] = f
	}
	return f
}

func (l *limiter) allow(now time.Time, key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.prune(now, key)) < l.max
}

func (l *limiter) fail(now time.Time, key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fails[key] = append(l.prune(now, key), now)
}

func (l *limiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, key)
}

// FieldErrors returns the per-field messages for the API's error body.
func (e *ValidationError) FieldErrors() map[string]string { return e.Fields }
