package container

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// addNIC creates the veth pair of NIC n: the host end vethIDiN in the
// bridge, the guest end created directly in init's network namespace under
// its final name with the guest's stable MAC.
func (d *Driver) addNIC(id, pid int, n nic) error {
	host := hostVeth(id, n.Index)
	mac := n.HWAddr
	if mac == "" {
		mac = MAC(id, n.Index)
	}
	steps := [][]string{
		{"link", "add", "name", host, "type", "veth", "peer", "name", n.Name, "address", mac, "netns", strconv.Itoa(pid)},
		{"link", "set", "dev", host, "master", n.Bridge, "up"},
	}
	for _, args := range steps {
		out, err := exec.Command(d.o.IPTool, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
