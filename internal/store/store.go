// Package store holds berth's desired state: guests, users, tokens,
// certificates, node configuration and the task index. Every object is a
// JSON value under a slash-separated key and carries a digest of its content,
// so that an update can name the version it started from and get ErrConflict
// instead of overwriting a change it never saw.
//
// Callers use the Store interface only; the embedded bbolt backend (Open) is
// the default, and a distributed backend can replace it without touching
// them. Runtime state (running processes, leases) does not belong here.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Errors returned by every backend; test them with errors.Is.
var (
	// ErrNotFound means no object exists under the key.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the object changed since the digest named in Cond
	// was read (a stale digest).
	ErrConflict = errors.New("digest mismatch: the object was changed by someone else")
	// ErrExists means Cond.Create was set but the key already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalidKey means the key is empty or malformed.
	ErrInvalidKey = errors.New("invalid key")
)

// Object is one stored value with its digest.
type Object struct {
	Key    string
	Value  []byte
	Digest string
}

// Cond is a precondition for a write. The zero Cond writes unconditionally.
type Cond struct {
	// Digest, when set, must equal the object's current digest.
	Digest string
	// Create requires that the key does not exist yet.
	Create bool
}

// Store is the interface every backend implements. Implementations are safe
// for concurrent use; every successful Put or Delete is durable when it
// returns.
type Store interface {
	// Get returns the object under key or ErrNotFound.
	Get(ctx context.Context, key string) (Object, error)
	// List returns all objects whose key starts with prefix, in key order.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Put writes value under key if cond holds and returns the new object.
	Put(ctx context.Context, key string, value []byte, cond Cond) (Object, error)
	// Delete removes key if cond holds. Deleting a missing key returns
	// ErrNotFound.
	Delete(ctx context.Context, key string, cond Cond) error
	// Close releases the backend.
	Close() error
}

// Digest returns the digest berth uses for a stored value: the SHA-256 of
// the bytes, hex encoded.
func Digest(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:])
}

// ValidKey reports whether key is acceptable: non-empty slash-separated
// segments without empty, "." or ".." parts and no NUL bytes.
func ValidKey(key string) error {
	if key == "" || strings.ContainsRune(key, 0) {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("%w: %q (empty, '.' or '..' segment)", ErrInvalidKey, key)
		}
	}
	return nil
}

// GetJSON reads key and decodes it into a new T, returning its digest.
func GetJSON[T any](ctx context.Context, s Store, key string) (T, string, error) {
	var v T
	obj, err := s.Get(ctx, key)
	if err != nil {
		return v, "", err
	}
	if err := json.Unmarshal(obj.Value, &v); err != nil {
		return v, "", fmt.Errorf("decode %s: %w", key, err)
	}
	return v, obj.Digest, nil
}

// PutJSON encodes v and writes it under key if cond holds, returning the new
// digest.
func PutJSON(ctx context.Context, s Store, key string, v any, cond Cond) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", key, err)
	}
	obj, err := s.Put(ctx, key, b, cond)
	if err != nil {
		return "", err
	}
	return obj.Digest, nil
}

// ListJSON decodes every object under prefix into T.
func ListJSON[T any](ctx context.Context, s Store, prefix string) ([]T, error) {
	objs, err := s.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		var v T
		if err := json.Unmarshal(o.Value, &v); err != nil {
			return nil, fmt.Errorf("decode %s: %w", o.Key, err)
		}
		out = append(out, v)
	}
	return out, nil
}
