package container

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// addNIC creates the veth pair of NIC n over netlink: the host end
// vethIDiN, up and in the bridge, and the guest end created directly in
// the container's network namespace (the descriptor netns) under its
// final name with the guest's stable MAC. One request, where ip(8) took
// two processes.
func (d *Driver) addNIC(id, netns int, n nic) error {
	host := hostVeth(id, n.Index)
	mac := n.HWAddr
	if mac == "" {
		mac = MAC(id, n.Index)
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("MAC address %q: %w", mac, err)
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", n.Bridge, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = host
	la.MasterIndex = br.Attrs().Index
	la.Flags = net.FlagUp
	v := netlink.NewVeth(la)
	v.PeerName = n.Name
	v.PeerHardwareAddr = hw
	v.PeerNamespace = netlink.NsFd(netns)
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s (peer %s in the container) in bridge %s: %w", host, n.Name, n.Bridge, err)
	}
	return nil
}
