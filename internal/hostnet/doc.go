// Package hostnet manages the host's network configuration the Proxmox
// way: changes are staged in /etc/network/interfaces.new, shown as a
// unified diff, and applied live over netlink — bridges, bonds, VLANs,
// addresses, routes and MTUs are created, changed or removed to reach the
// file's state without a reboot and without taking down bridges that
// guests sit on. An apply can be rolled back automatically unless it is
// confirmed in time, and that pending rollback survives a daemon restart.
//
// The file format itself lives in internal/ifupdown. Live changes run in
// a helper process (RunHelper) that the daemon re-executes in the target
// network namespace.
package hostnet
