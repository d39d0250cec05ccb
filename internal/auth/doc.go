// Package auth owns who may call the daemon: local users with argon2id
// password hashes, API tokens stored hashed, signed login tickets with CSRF
// tokens, roles, and the rate limit on failed logins. It keeps its records
// in the store and knows nothing of HTTP; the api package asks it questions.
package auth
