package guest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ValidationError reports request fields that are wrong. The API layer
// maps it to 400 with Fields as the per-field errors.
type ValidationError struct {
	// Fields maps field names ("id", "kind", "name", "startup", "onboot",
	// or a driver config key) to what is wrong with each.
	Fields map[string]string
}

// Error lists the fields in name order.
func (e *ValidationError) Error() string {
	keys := slices.Sorted(maps.Keys(e.Fields))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + e.Fields[k]
	}
	return "invalid guest configuration: " + strings.Join(parts, "; ")
}

// wrapped is an error with its own message that still matches a sentinel
// with errors.Is, so callers see "guest 101 already exists" rather than the
// store's key-level text.
type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

// wrapf returns an error whose message is the formatted text and which
// wraps err.
func wrapf(err error, format string, args ...any) error {
	return &wrapped{msg: fmt.Sprintf(format, args...), err: err}
}

// FieldErrors returns the per-field messages for the API's error body.
func (e *ValidationError) FieldErrors() map[string]string { return e.Fields }
