package api

// Boot modes reported in BootInfo.Mode.
const (
	BootEFI  = "efi"
	BootBIOS = "bios"
)

// KSM run states reported in KSM.Run; they are the values of
// /sys/kernel/mm/ksm/run.
const (
	KSMStopped   = 0
	KSMRunning   = 1
	KSMUnmerging = 2
)

// NodeStatus is the data of GET /nodes/{node}/status: a snapshot of the
// host's kernel, CPU, memory, root filesystem, firmware and KSM state. All
// sizes are in bytes.
type NodeStatus struct {
	Hostname string `json:"hostname"`
	// Kernel is the running kernel, as `uname -s`, `-r` and `-v` print it.
	Kernel KernelInfo `json:"current-kernel"`
	// Uptime is the number of whole seconds since boot.
	Uptime int64 `json:"uptime"`
	// LoadAvg is the 1, 5 and 15 minute load average.
	LoadAvg [3]float64  `json:"loadavg"`
	CPUInfo CPUInfo     `json:"cpuinfo"`
	Memory  MemoryUsage `json:"memory"`
	Swap    SwapUsage   `json:"swap"`
	// RootFS is the usage of the filesystem holding /.
	RootFS   FSUsage  `json:"rootfs"`
	BootInfo BootInfo `json:"boot-info"`
	KSM      KSM      `json:"ksm"`
	// ESP is the quick state of the synced EFI system partitions (`berth
	// boot status`); absent when the host has no ESP list.
	ESP *BootStatus `json:"esp,omitempty"`
	// BerthVersion is the version of the daemon that answered, if it says.
	BerthVersion string `json:"berth-version,omitempty"`
}

// KernelInfo identifies the running kernel.
type KernelInfo struct {
	// Sysname is the kernel name, "Linux".
	Sysname string `json:"sysname"`
	// Release is the kernel release, e.g. "6.1.0-28-amd64".
	Release string `json:"release"`
	// Version is the kernel build string, e.g.
	// "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)".
	Version string `json:"version"`
}

// CPUInfo describes the host's processors.
type CPUInfo struct {
	// Model is the model name of the first processor, e.g.
	// "AMD EPYC 7302 16-Core Processor"; empty if the kernel does not
	// report one.
	Model string `json:"model"`
	// CPUs is the number of logical CPUs (hardware threads).
	CPUs int `json:"cpus"`
	// Sockets is the number of physical packages.
	Sockets int `json:"sockets"`
	// Cores is the number of physical cores over all sockets.
	Cores int `json:"cores"`
}

// MemoryUsage is the host's RAM usage, from /proc/meminfo.
type MemoryUsage struct {
	Total uint64 `json:"total"`
	// Used is Total minus Available: memory that cannot be reclaimed
	// without swapping.
	Used uint64 `json:"used"`
	// Free is memory not used for anything (MemFree), not even caches.
	Free uint64 `json:"free"`
	// Available is the kernel's estimate of memory available to new
	// workloads without swapping (MemAvailable).
	Available uint64 `json:"available"`
}

// SwapUsage is the host's swap usage.
type SwapUsage struct {
	Total uint64 `json:"total"`
	Used  uint64 `json:"used"`
	Free  uint64 `json:"free"`
}

// FSUsage is a filesystem's space usage, as df reports it.
type FSUsage struct {
	Total uint64 `json:"total"`
	Used  uint64 `json:"used"`
	// Avail is the space available to unprivileged users; it excludes
	// blocks reserved for root, so Used+Avail may be less than Total.
	Avail uint64 `json:"avail"`
}

// BootInfo tells how the host booted.
type BootInfo struct {
	// Mode is "efi" or "bios".
	Mode string `json:"mode"`
	// SecureBoot tells whether UEFI Secure Boot is enabled. It is false
	// when booted by BIOS or when the EFI variable cannot be read.
	SecureBoot bool `json:"secureboot"`
}

// KSM is the state of Kernel Samepage Merging, from /sys/kernel/mm/ksm. It
// is all zeros when the kernel has no KSM support.
type KSM struct {
	// Run is 0 (stopped), 1 (running) or 2 (unmerging all pages).
	Run int `json:"run"`
	// PagesShared is the number of shared pages in use.
	PagesShared uint64 `json:"pages-shared"`
	// PagesSharing is the number of page mappings that point at shared
	// pages, i.e. how many pages were deduplicated.
	PagesSharing uint64 `json:"pages-sharing"`
	// PagesUnshared is the number of pages unique but repeatedly checked
	// for merging.
	PagesUnshared uint64 `json:"pages-unshared"`
	// FullScans is how many times all mergeable areas have been scanned.
	FullScans uint64 `json:"full-scans"`
	// Saved is the memory KSM saves: PagesSharing times the page size.
	Saved uint64 `json:"saved"`
	// Mode is the node's KSM mode ("auto", "on" or "off"; see KSMConfig),
	// empty when the daemon does not control KSM.
	Mode string `json:"mode,omitempty"`
}

// NodeConfig is the body of GET and PUT /nodes/{node}/config: per-node
// settings.
type NodeConfig struct {
	// Description is free text shown in the node summary, at most 8 KiB.
	Description string `json:"description,omitempty"`
	// WakeOnLAN is the MAC address, e.g. "aa:bb:cc:dd:ee:ff", that a magic
	// packet is sent to when the node is woken.
	WakeOnLAN string `json:"wakeonlan,omitempty"`
	// StartallOnbootDelay is how many seconds, 0 to 300, to wait before
	// starting guests marked start-on-boot.
	StartallOnbootDelay int `json:"startall-onboot-delay,omitempty"`
	// Digest is the digest of the stored config. On PUT it guards against
	// concurrent changes: the update fails if it no longer matches.
	Digest string `json:"digest,omitempty"`
}
