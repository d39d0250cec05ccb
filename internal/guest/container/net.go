package container

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// addNIC creates the veth pair of NIC n: the host end vethIDiN in the
// bridge, the guest end created directly in the container's network
// namespace (the descriptor netns) under its final name with the guest's
// stable MAC.
func (d *Driver) addNIC(id, netns int, n nic) error {
	host := hostVeth(id, n.Index)
	mac := n.HWAddr
	if mac == "" {
		mac = MAC(id, n.Index)
	}
	steps := [][]string{
		{"link", "add", "name", host, "type", "veth", "peer", "name", n.Name, "address", mac, "netns", "/proc/self/fd/3"},
		{"link", "set", "dev", host, "master", n.Bridge, "up"},
	}
	// ip(8) gets the namespace as its descriptor 3.
	dup, err := unix.FcntlInt(uintptr(netns), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return fmt.Errorf("network namespace descriptor: %w", err)
	}
	ns := os.NewFile(uintptr(dup), "netns")
	defer ns.Close()
	for _, args := range steps {
		cmd := exec.Command(d.o.IPTool, args...)
		cmd.ExtraFiles = []*os.File{ns}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
