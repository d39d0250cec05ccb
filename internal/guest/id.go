package guest

import (
	"fmt"
	"strconv"
	"strings"
)

// Guest ID bounds, inclusive, as in Proxmox.
const (
	MinID = 100
	MaxID = 999999999
)

// keyPrefix is the store prefix under which guest configurations live.
const keyPrefix = "guests/"

// ValidateID reports whether id is a usable guest ID.
func ValidateID(id int) error {
	if id < MinID || id > MaxID {
		return fmt.Errorf("guest ID %d is out of range: use %d to %d", id, MinID, MaxID)
	}
	return nil
}

// key returns the store key of guest id. IDs are zero-padded to nine digits
// so that the store's key order is numeric order.
func key(id int) string {
	return fmt.Sprintf("%s%09d", keyPrefix, id)
}

// idFromKey parses a key made by key.
func idFromKey(k string) (int, error) {
	s, ok := strings.CutPrefix(k, keyPrefix)
	if !ok {
		return 0, fmt.Errorf("store key %q is not a guest key", k)
	}
	id, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("store key %q: bad guest ID: %w", k, err)
	}
	return id, nil
}
