package api

// VMStatus is a QEMU VM's runtime state as read from QEMU itself (QMP) and
// from its process.
type VMStatus struct {
	ID int `json:"id"`
	// Status is "running", "paused" or "stopped".
	Status string `json:"status"`
	// QMPStatus is QEMU's own run state ("running", "paused",
	// "shutdown", "prelaunch", …); empty when QEMU is not running.
	QMPStatus string `json:"qmpstatus,omitempty"`
	// Accelerator is "kvm" when the VM runs on KVM, "tcg" when QEMU
	// emulates the CPU in software.
	Accelerator string `json:"accelerator,omitempty"`
	PID         int    `json:"pid,omitempty"`
	// CPUSeconds is the CPU time QEMU has used, user plus system.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// MemoryBytes is QEMU's resident memory; MaxMemoryMiB the guest's
	// configured RAM.
	MemoryBytes  int64 `json:"memory_bytes,omitempty"`
	MaxMemoryMiB int   `json:"max_memory_mib,omitempty"`
	// UptimeSeconds counts from QEMU's start.
	UptimeSeconds int64 `json:"uptime_seconds,omitempty"`
	// VNC is the unix socket of the VM's VNC display.
	VNC string `json:"vnc,omitempty"`
	// Serial is the unix socket of the VM's first serial port.
	Serial string `json:"serial,omitempty"`
}

// VMSnapshot is an internal qcow2 snapshot taken on every qcow2 disk of a
// VM under the same name.
type VMSnapshot struct {
	Name string `json:"name"`
	// Disks lists the config keys (disk0, …) holding the snapshot.
	Disks []string `json:"disks"`
	// Date is when it was taken, Unix seconds.
	Date int64 `json:"date"`
}

// VMSnapshotRequest names a snapshot to create.
type VMSnapshotRequest struct {
	Name string `json:"name"`
}

// ConsoleUpgrade is the Upgrade protocol of VM and UML console
// attachments: after "101 Switching Protocols" the connection carries the
// console's raw bytes both ways, unframed.
const ConsoleUpgrade = "berth-console"
