// Package tap creates and removes persistent TAP interfaces enslaved to a
// Linux bridge, the way guest NICs (QEMU taps, UML tuntap) attach to the
// host network. It drives ip(8) from iproute2; it does not configure
// bridges themselves.
package tap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Net reads and changes host interfaces. SysNet is the sysfs directory of
// network interfaces ("/sys/class/net" on a real host); IP is the ip(8)
// binary.
type Net struct {
	SysNet string
	IP     string
}

// Host is the real host.
var Host = Net{SysNet: "/sys/class/net", IP: "ip"}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// ValidName reports whether name can be a Linux interface name.
func ValidName(name string) bool {
	return nameRE.MatchString(name) && name != "." && name != ".."
}

// BridgeExists reports whether br is an existing bridge, and if not, why.
func (n Net) BridgeExists(br string) error {
	if !ValidName(br) {
		return fmt.Errorf("%q is not a valid interface name", br)
	}
	if _, err := os.Stat(filepath.Join(n.SysNet, br)); err != nil {
		return fmt.Errorf("bridge %s does not exist on this host (create it, e.g. in /etc/network/interfaces, or name another)", br)
	}
	if _, err := os.Stat(filepath.Join(n.SysNet, br, "bridge")); err != nil {
		return fmt.Errorf("interface %s exists but is not a bridge", br)
	}
	return nil
}

// Exists reports whether interface name exists.
func (n Net) Exists(name string) bool {
	_, err := os.Lstat(filepath.Join(n.SysNet, name))
	return err == nil
}

// Create makes a persistent TAP interface name, owned by uid (-1 for
// root only), enslaves it to bridge and sets it up. A leftover interface
// of the same name is replaced. On failure nothing is left behind.
func (n Net) Create(ctx context.Context, name, bridge string, uid int) error {
	if err := n.BridgeExists(bridge); err != nil {
		return err
	}
	if !ValidName(name) {
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	if n.Exists(name) {
		if err := n.Delete(ctx, name); err != nil {
			return err
		}
	}
	args := []string{"tuntap", "add", "dev", name, "mode", "tap"}
	if uid >= 0 {
		args = append(args, "user", fmt.Sprint(uid))
	}
	if err := n.ip(ctx, args...); err != nil {
		return err
	}
	if err := n.ip(ctx, "link", "set", "dev", name, "master", bridge, "up"); err != nil {
		n.Delete(context.WithoutCancel(ctx), name)
		return err
	}
	return nil
}

// Delete removes interface name; a missing one is not an error.
func (n Net) Delete(ctx context.Context, name string) error {
	if !n.Exists(name) {
		return nil
	}
	return n.ip(ctx, "link", "del", "dev", name)
}

func (n Net) ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, n.IP, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
