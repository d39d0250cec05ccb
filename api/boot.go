package api

// BootStatus is the state of the host's boot loader setup (`berth boot
// status`, GET /api/v1/node/boot/status).
type BootStatus struct {
	// Configured is false when /etc/kernel/proxmox-boot-uuids does not exist
	// (the host boots with plain GRUB or is not managed).
	Configured bool `json:"configured"`
	// BootMode is how the running system booted: "efi" or "bios".
	BootMode string `json:"boot-mode"`
	// SecureBoot tells whether UEFI Secure Boot is enabled.
	SecureBoot bool `json:"secureboot"`
	// BootCurrent is the firmware boot entry used for this boot (-1 unknown).
	BootCurrent int `json:"boot-current"`
	// BootOrder is the firmware boot order (entry numbers).
	BootOrder []int `json:"boot-order,omitempty"`
	// FirmwareEntries are the firmware boot entries (what efibootmgr lists).
	FirmwareEntries []FirmwareBootEntry `json:"firmware-entries,omitempty"`
	// Kernels are the versions that should be on every ESP, newest first.
	Kernels []string `json:"kernels"`
	// Pin is the permanently pinned kernel ("" if none).
	Pin string `json:"pin,omitempty"`
	// NextBootPin is the kernel pinned for the next boot only.
	NextBootPin string `json:"next-boot-pin,omitempty"`
	// ESPs lists every ESP in /etc/kernel/proxmox-boot-uuids.
	ESPs []ESPStatus `json:"esps"`
}

// FirmwareBootEntry is one UEFI Boot#### variable.
type FirmwareBootEntry struct {
	// Number is the #### of Boot####.
	Number int `json:"number"`
	// Description is the entry's label.
	Description string `json:"description"`
	// Active tells whether the entry is enabled.
	Active bool `json:"active"`
	// Path is the loader file path, if the entry has one.
	Path string `json:"path,omitempty"`
}

// ESPStatus is one synced EFI system partition.
type ESPStatus struct {
	// UUID is the FAT volume ID (XXXX-XXXX).
	UUID string `json:"uuid"`
	// Device is the partition's device node ("" if it was not found).
	Device string `json:"device,omitempty"`
	// Mode is "systemd-boot" or "grub" ("" if not initialised).
	Mode string `json:"mode"`
	// Versions are the kernel versions on the ESP.
	Versions []string `json:"versions"`
	// InSync is true when the ESP holds exactly the selected kernels and
	// every file on it could be read.
	InSync bool `json:"in-sync"`
	// Missing are selected kernels that are not on the ESP.
	Missing []string `json:"missing,omitempty"`
	// Extra are kernels on the ESP that are no longer selected.
	Extra []string `json:"extra,omitempty"`
	// Error says why the ESP is missing or damaged.
	Error string `json:"error,omitempty"`
}

// BootKernels is the kernel selection (`berth boot kernel list`).
type BootKernels struct {
	// Manual is the manual kernel list.
	Manual []string `json:"manual"`
	// Selected are all kernels kept on the ESPs, newest first.
	Selected []string `json:"selected"`
	// Pin is the permanently pinned kernel.
	Pin string `json:"pin,omitempty"`
	// NextBootPin is the kernel pinned for the next boot only.
	NextBootPin string `json:"next-boot-pin,omitempty"`
}
