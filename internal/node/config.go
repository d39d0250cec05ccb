package node

import (
	"fmt"
	"net"

	"github.com/berthhq/berth/api"
)

// Limits on NodeConfig fields.
const (
	// MaxDescription is the longest description accepted, in bytes.
	MaxDescription = 8 * 1024
	// MaxStartallOnbootDelay is the longest start-on-boot delay accepted,
	// in seconds.
	MaxStartallOnbootDelay = 300
)

// ValidateConfig checks c and returns what is wrong with each invalid field,
// keyed by its JSON name. The map is empty, not nil, when c is valid, so it
// can be used directly as api.Error.Fields.
func ValidateConfig(c api.NodeConfig) map[string]string {
	errs := map[string]string{}
	if n := len(c.Description); n > MaxDescription {
		errs["description"] = fmt.Sprintf("too long: %d bytes, at most %d allowed", n, MaxDescription)
	}
	if c.WakeOnLAN != "" {
		if _, err := ParseMAC(c.WakeOnLAN); err != nil {
			errs["wakeonlan"] = err.Error()
		}
	}
	if d := c.StartallOnbootDelay; d < 0 || d > MaxStartallOnbootDelay {
		errs["startall-onboot-delay"] = fmt.Sprintf("%d is out of range: must be 0 to %d seconds", d, MaxStartallOnbootDelay)
	}
	return errs
}

// ParseMAC parses s as a 6-byte Ethernet MAC address in any form
// net.ParseMAC accepts, such as "aa:bb:cc:dd:ee:ff" or "aa-bb-cc-dd-ee-ff".
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("invalid MAC address %q: want 6 bytes like aa:bb:cc:dd:ee:ff", s)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("invalid MAC address %q: has %d bytes, want a 6-byte Ethernet address like aa:bb:cc:dd:ee:ff", s, len(mac))
	}
	return mac, nil
}
