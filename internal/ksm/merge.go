package ksm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
)

// GuestKey is the guest configuration key that chooses whether a guest's
// memory may be merged: "1" (the default) or "0" to opt out. Guests of
// tenants who must not share pages with other guests (KSM makes
// page-deduplication side channels possible) set ksm=0.
const GuestKey = "ksm"

// ValidateGuest checks the ksm key of a guest configuration; drivers call
// it from Validate and merge its result into theirs.
func ValidateGuest(cfg api.Guest) map[string]string {
	if _, err := GuestChoice(cfg); err != nil {
		return map[string]string{GuestKey: err.Error()}
	}
	return nil
}

// Choice is a guest's KSM choice.
type Choice int

// Guest KSM choices.
const (
	// ChoiceDefault: the config does not say. VMs are mergeable (QEMU's
	// and Proxmox's default); containers keep the kernel's default, where
	// only memory a program marks itself is merged.
	ChoiceDefault Choice = iota
	// ChoiceOn (ksm=1): VMs mergeable; containers mergeable as a whole.
	ChoiceOn
	// ChoiceOff (ksm=0): never merge this guest's memory.
	ChoiceOff
)

// GuestChoice reads the ksm key of cfg.
func GuestChoice(cfg api.Guest) (Choice, error) {
	v, ok := cfg.Config[GuestKey]
	if !ok {
		return ChoiceDefault, nil
	}
	switch v {
	case "1", "on", "yes", "true":
		return ChoiceOn, nil
	case "0", "off", "no", "false":
		return ChoiceOff, nil
	}
	return ChoiceDefault, fmt.Errorf("%q is not a KSM choice: use 1 to allow merging this guest's memory or 0 to opt out", v)
}

// EffectiveChoice is the choice a guest starts with: its own (GuestChoice),
// or ChoiceOff whatever it says when the node does not allow merging
// (mode off: `berth ksm disable`), so that a guest started while KSM is
// disabled stays unmergeable even if KSM is enabled later, until its
// next start.
func EffectiveChoice(cfg api.Guest, nodeAllows bool) (Choice, error) {
	c, err := GuestChoice(cfg)
	if err != nil || !nodeAllows {
		return ChoiceOff, err
	}
	return c, nil
}

// String is the choice as `berth ksm status` shows it: "on" (ksm=1),
// "off" (ksm=0) or "default".
func (c Choice) String() string {
	switch c {
	case ChoiceOn:
		return "on"
	case ChoiceOff:
		return "off"
	}
	return "default"
}

// GuestMerge tells whether a VM's memory may be merged: true unless the
// config says ksm=0. Container drivers use GuestChoice, whose default
// differs.
func GuestMerge(cfg api.Guest) (bool, error) {
	c, err := GuestChoice(cfg)
	if err != nil {
		return false, err
	}
	return c != ChoiceOff, nil
}

// QEMUMachineOption returns the -machine property that makes QEMU mark
// (or not mark) the guest's RAM mergeable: "mem-merge=on" or
// "mem-merge=off". QEMU merges several -machine options, so drivers can
// pass it as its own "-machine" argument.
func QEMUMachineOption(merge bool) string {
	if merge {
		return "mem-merge=on"
	}
	return "mem-merge=off"
}

// ErrMergeAnyUnsupported means the kernel lacks PR_SET_MEMORY_MERGE (it
// arrived in Linux 6.4).
var ErrMergeAnyUnsupported = errors.New("this kernel cannot make a whole process mergeable (PR_SET_MEMORY_MERGE needs Linux 6.4 or later)")

// SetProcessMerge makes every anonymous mapping of the calling process,
// present and future, mergeable (true) or clears that again (false), with
// prctl(PR_SET_MEMORY_MERGE). The choice is inherited across fork and kept
// across execve, so container drivers call it in their re-exec'd helper
// just before executing the container's init: SetProcessMerge(true) for
// ChoiceOn, SetProcessMerge(false) for ChoiceOff, nothing for
// ChoiceDefault. It affects the whole process (all
// threads); the daemon itself must never call it. Clearing it does not
// undo areas the program itself marks with madvise(MADV_MERGEABLE), as
// QEMU does: for VMs use QEMUMachineOption.
func SetProcessMerge(merge bool) error {
	var v uintptr
	if merge {
		v = 1
	}
	if err := unix.Prctl(unix.PR_SET_MEMORY_MERGE, v, 0, 0, 0); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return ErrMergeAnyUnsupported
		}
		return fmt.Errorf("prctl(PR_SET_MEMORY_MERGE, %d): %w", v, err)
	}
	return nil
}

// ProcessMerge reports whether the calling process is mergeable as a
// whole (PR_GET_MEMORY_MERGE).
func ProcessMerge() (bool, error) {
	r, err := unix.PrctlRetInt(unix.PR_GET_MEMORY_MERGE, 0, 0, 0, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return false, ErrMergeAnyUnsupported
		}
		return false, fmt.Errorf("prctl(PR_GET_MEMORY_MERGE): %w", err)
	}
	return r == 1, nil
}
