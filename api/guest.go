package api

// GuestKind names the kind of a guest and so the driver that runs it.
type GuestKind string

// Guest kinds.
const (
	// GuestContainer is a system container (Proxmox "CT").
	GuestContainer GuestKind = "container"
	// GuestVM is a QEMU virtual machine.
	GuestVM GuestKind = "vm"
	// GuestUML is a User Mode Linux guest.
	GuestUML GuestKind = "uml"
)

// Guest status values, as reported by the guest's driver.
const (
	GuestRunning = "running"
	GuestStopped = "stopped"
	GuestPaused  = "paused"
	// GuestUnknown means the driver could not tell.
	GuestUnknown = "unknown"
)

// Startup controls a guest's place in bulk start and stop. Its text form,
// as in Proxmox, is "order=N,up=S,down=S" with every part optional.
type Startup struct {
	// Order is the start position, lowest first; guests with an order
	// start before guests without one (0 means no order). Guests stop in
	// the reverse order.
	Order int `json:"order,omitempty"`
	// Up is how many seconds to wait after starting this guest before
	// starting the next one.
	Up int `json:"up,omitempty"`
	// Down is how many seconds a clean shutdown may take before the guest
	// is stopped hard; 0 means the node's default.
	Down int `json:"down,omitempty"`
}

// Guest is one guest's configuration as stored, plus its current status.
type Guest struct {
	// ID is the node-unique guest ID, 100 to 999999999.
	ID   int       `json:"id"`
	Kind GuestKind `json:"kind"`
	// Name is an optional DNS-style name.
	Name string `json:"name,omitempty"`
	// OnBoot starts the guest when the node boots.
	OnBoot  bool    `json:"onboot,omitempty"`
	Startup Startup `json:"startup,omitzero"`
	// Config holds the driver-specific options (memory, disks, network…).
	Config map[string]string `json:"config,omitempty"`
	// Status is "running", "stopped", "paused" or "unknown", filled in
	// from the driver on reads; it is never stored.
	Status string `json:"status,omitempty"`
	// Digest identifies the stored version of the configuration; send it
	// back with an update to fail instead of overwriting a newer change.
	Digest string `json:"digest,omitempty"`
}

// GuestConfigUpdate is the body of a configuration change. Nil fields are
// left alone.
type GuestConfigUpdate struct {
	Name    *string  `json:"name,omitempty"`
	OnBoot  *bool    `json:"onboot,omitempty"`
	Startup *Startup `json:"startup,omitempty"`
	// Config sets driver-specific options, adding or replacing them.
	Config map[string]string `json:"config,omitempty"`
	// Delete removes driver-specific options; deleting an absent key is
	// not an error. A key may not be both set and deleted.
	Delete []string `json:"delete,omitempty"`
	// Digest, when set, must match the stored configuration's digest or
	// the update fails with a conflict.
	Digest string `json:"digest,omitempty"`
}
