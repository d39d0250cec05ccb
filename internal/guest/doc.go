// Package guest is the driver-independent part of berth's guest management:
// guest IDs, the common configuration schema, the guest registry in the
// store, the Driver interface that container, QEMU and User Mode Linux
// drivers implement, and the onboot ordering and bulk start/stop that
// Proxmox users know from "startup: order=N,up=S,down=S".
//
// It is not a driver: it never starts a process, touches a disk or opens a
// console itself. Drivers live in subpackages and are handed to
// NewRegistry. It is not the API layer either: it returns *ValidationError
// and errors wrapping store.ErrNotFound, store.ErrExists and
// store.ErrConflict, which the HTTP handlers map to status codes, and it
// does not run tasks or take locks across operations. Runtime state
// (whether a guest runs, its PID) is asked of the driver and never stored.
package guest
