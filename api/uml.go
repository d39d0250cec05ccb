package api

// UMLStatus is a User Mode Linux guest's runtime state, as read from its
// process and its management console (mconsole).
type UMLStatus struct {
	ID int `json:"id"`
	// Status is "running", "paused" (stopped through mconsole) or
	// "stopped".
	Status string `json:"status"`
	PID    int    `json:"pid,omitempty"`
	// User is the host account the UML kernel runs as.
	User string `json:"user,omitempty"`
	// Kernel is the guest kernel's version as mconsole reports it.
	Kernel      string  `json:"kernel,omitempty"`
	CPUSeconds  float64 `json:"cpu_seconds,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	// MaxMemoryMiB is the guest's configured RAM.
	MaxMemoryMiB  int   `json:"max_memory_mib,omitempty"`
	UptimeSeconds int64 `json:"uptime_seconds,omitempty"`
	// Mconsole is the management console's socket.
	Mconsole string `json:"mconsole,omitempty"`
}

// UMLCommitRequest asks to merge a disk's copy-on-write file into a new
// base image.
type UMLCommitRequest struct {
	// Disk is the config key of the COW disk, "disk0" by default.
	Disk string `json:"disk,omitempty"`
	// Image is the path of the new, merged image; it must not exist.
	Image string `json:"image"`
}

// UMLSysrqRequest sends a magic SysRq key to a UML guest's kernel.
type UMLSysrqRequest struct {
	Key string `json:"key"`
}

// UMLSysrqResponse is the kernel's answer.
type UMLSysrqResponse struct {
	Output string `json:"output"`
}
