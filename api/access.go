package api

// Roles, from least to most privileged.
const (
	RoleAuditor  = "auditor"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// User is a local user account (realm "berth").
type User struct {
	// Name is the user id without realm, e.g. "alice".
	Name    string `json:"name"`
	Role    string `json:"role"`
	Comment string `json:"comment,omitempty"`
	Enabled bool   `json:"enabled"`
	Created int64  `json:"created"`
}

// UserCreate is the body of POST /access/users.
type UserCreate struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Role     string `json:"role"`
	Comment  string `json:"comment,omitempty"`
}

// UserUpdate is the body of PUT /access/users/{name}; nil fields stay.
type UserUpdate struct {
	Password *string `json:"password,omitempty"`
	Role     *string `json:"role,omitempty"`
	Comment  *string `json:"comment,omitempty"`
	Enabled  *bool   `json:"enabled,omitempty"`
}

// Token is an API token; its secret is never returned after creation.
type Token struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Comment string `json:"comment,omitempty"`
	Created int64  `json:"created"`
	// Expire is a unix time after which the token is refused; 0 = never.
	Expire int64 `json:"expire,omitempty"`
}

// TokenCreate is the body of POST /access/tokens.
type TokenCreate struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Comment string `json:"comment,omitempty"`
	Expire  int64  `json:"expire,omitempty"`
}

// TokenSecret is returned once, when a token is created: Value is what goes
// after "Authorization: Bearer ".
type TokenSecret struct {
	Token Token  `json:"token"`
	Value string `json:"value"`
}

// LoginRequest is the body of POST /access/ticket.
type LoginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Ticket is the answer to a successful login. The ticket is also set as the
// BerthAuthCookie cookie; writes made with it must send CSRFPreventionToken
// as a header of the same name.
type Ticket struct {
	Username            string `json:"username"`
	Role                string `json:"role"`
	Ticket              string `json:"ticket"`
	CSRFPreventionToken string `json:"CSRFPreventionToken"`
}

// Identity says who the caller is, as the daemon sees it.
type Identity struct {
	User string `json:"user"`
	Role string `json:"role"`
	// Via is how the caller authenticated: "unix", "token" or "ticket".
	Via string `json:"via"`
}
