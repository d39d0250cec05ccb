package esp

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/efivars"
	"github.com/berthhq/berth/internal/kernelsel"
)

// Report is the state of the host's boot setup.
type Report struct {
	// Configured is false when there is no ESP list.
	Configured bool
	// BootMode is "efi" or "bios"; SecureBoot is from the EFI variables.
	BootMode   string
	SecureBoot bool
	Firmware   *efivars.Info
	// Kernels are the versions that should be on every ESP.
	Kernels     []string
	Pin         string
	NextBootPin string
	ESPs        []ESPReport
}

// ESPReport is one listed ESP.
type ESPReport struct {
	UUID   string
	Device string
	// Mode is "systemd-boot" (uefi) or "grub"; "" if not initialised.
	Mode     string
	Versions []string
	// InSync is true when exactly the selected kernels are present.
	InSync  bool
	Missing []string
	Extra   []string
	// Error says why the ESP could not be read ("" if it could).
	Error string
}

// Status inspects every listed ESP without changing anything, reading
// every loader entry, kernel and initrd on it to find damage.
func (t *Tool) Status() (*Report, error) { return t.status(true) }

// QuickStatus is Status without reading the files' contents: directories
// and entries only (what node status shows).
func (t *Tool) QuickStatus() (*Report, error) { return t.status(false) }

func (t *Tool) status(deep bool) (*Report, error) {
	r := &Report{BootMode: "bios"}
	if t.EFIBooted() {
		r.BootMode = "efi"
		if info, err := efivars.Read(filepath.Join(t.Sys, "firmware/efi/efivars")); err == nil {
			r.Firmware = info
			r.SecureBoot = info.SecureBoot
		}
	}
	pin, next, nextSet := t.Pins()
	r.Pin = pin
	if nextSet {
		r.NextBootPin = next
	}
	uuids, err := t.UUIDs()
	if errors.Is(err, ErrNotConfigured) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	r.Configured = true
	want := map[string]bool{}
	for _, im := range t.images(t.Kernels("")) {
		want[im.version] = true
		r.Kernels = append(r.Kernels, im.version)
	}
	parts, err := t.Partitions()
	if err != nil {
		return r, err
	}
	for _, u := range uuids {
		er := ESPReport{UUID: u}
		p, err := t.FindUUID(u, parts)
		if err != nil {
			er.Error = "no partition with this FAT volume ID was found (disk missing or ESP overwritten)"
			r.ESPs = append(r.ESPs, er)
			continue
		}
		er.Device = p.Path
		v, err := t.open(p)
		if err != nil {
			er.Error = err.Error()
			r.ESPs = append(r.ESPs, er)
			continue
		}
		er.Mode = v.mode()
		if er.Mode == "" {
			_, err = v.fs.ReadDir("loader")
			if err == nil {
				_, err = v.fs.ReadDir("grub")
			}
			er.Error = fmt.Sprintf("no boot loader found (neither loader/ with EFI/proxmox/ nor grub/): %v", err)
		}
		er.Versions, err = v.versions(er.Mode)
		if err == nil && deep && er.Mode == ModeSystemdBoot {
			err = v.checkEntries(er.Versions)
		}
		v.close()
		if err != nil && er.Error == "" {
			er.Error = err.Error()
		}
		for k := range want {
			if !slices.Contains(er.Versions, k) {
				er.Missing = append(er.Missing, k)
			}
		}
		for _, k := range er.Versions {
			if !want[k] {
				er.Extra = append(er.Extra, k)
			}
		}
		slices.SortFunc(er.Missing, kernelsel.Compare)
		er.InSync = er.Error == "" && er.Mode != "" && len(er.Missing) == 0 && len(er.Extra) == 0
		r.ESPs = append(r.ESPs, er)
	}
	return r, nil
}

// versions lists the kernels on the ESP in version order.
func (v *volume) versions(mode string) ([]string, error) {
	var out []string
	switch mode {
	case ModeSystemdBoot:
		ents, err := v.fs.ReadDir("EFI/proxmox")
		if err != nil {
			return nil, fmt.Errorf("read EFI/proxmox: %w", err)
		}
		for _, e := range ents {
			// A version counts once its entry exists: refresh writes the
			// entry only after the kernel and initrd are complete.
			if e.IsDir && v.exists("loader/entries/proxmox-"+e.Name+".conf") {
				out = append(out, e.Name)
			}
		}
	case ModeGrub:
		ents, err := v.fs.ReadDir("")
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if s, ok := strings.CutPrefix(e.Name, "vmlinuz-"); ok && !e.IsDir {
				out = append(out, s)
			}
		}
	}
	slices.SortFunc(out, kernelsel.Compare)
	return out, nil
}

// checkEntries reads every loader entry and the files it names, so a
// damaged ESP is reported rather than found at boot.
func (v *volume) checkEntries(versions []string) error {
	for _, ver := range versions {
		for _, f := range []string{"loader/entries/proxmox-" + ver + ".conf", "EFI/proxmox/" + ver + "/vmlinuz-" + ver, "EFI/proxmox/" + ver + "/initrd.img-" + ver} {
			if err := v.fs.WalkFile(f, func([]byte) error { return nil }); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
	}
	if _, err := v.fs.ReadFile("loader/loader.conf"); err != nil {
		return fmt.Errorf("loader/loader.conf: %w", err)
	}
	return nil
}

// PrintStatus prints the report the way proxmox-boot-tool status does,
// plus a line for every ESP that is out of sync or unreadable.
func (t *Tool) PrintStatus(r *Report) {
	if r.BootMode == "efi" {
		t.outf("System currently booted with uefi")
	} else {
		t.outf("System currently booted with legacy bios")
	}
	for _, e := range r.ESPs {
		if e.Device == "" {
			t.warnf("WARN: /dev/disk/by-uuid/%s does not exist - clean '/etc/kernel/proxmox-boot-uuids'! - skipping", e.UUID)
			continue
		}
		var res string
		switch e.Mode {
		case ModeSystemdBoot:
			res = "uefi (versions: " + strings.Join(e.Versions, ", ") + ")"
		case ModeGrub:
			res = "grub (versions: " + strings.Join(e.Versions, ", ") + ")"
		}
		t.outf("%s is configured with: %s", e.UUID, res)
		switch {
		case e.Error != "":
			t.warnf("E: ESP %s (%s) is damaged: %s - run 'berth boot refresh' (or 'berth boot format' and 'init' to rebuild it)", e.UUID, e.Device, e.Error)
		case !e.InSync:
			t.warnf("W: ESP %s (%s) is out of sync (missing: %s; extra: %s) - run 'berth boot refresh'", e.UUID, e.Device, dashJoin(e.Missing), dashJoin(e.Extra))
		}
	}
}

func dashJoin(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}

// Healthy tells whether every listed ESP was found, readable and in sync.
func (r *Report) Healthy() bool {
	for _, e := range r.ESPs {
		if !e.InSync {
			return false
		}
	}
	return true
}

// Wire converts the report to its API type.
func (r *Report) Wire() wire.BootStatus {
	out := wire.BootStatus{Configured: r.Configured, BootMode: r.BootMode, SecureBoot: r.SecureBoot, BootCurrent: -1,
		Kernels: nonNil(r.Kernels), Pin: r.Pin, NextBootPin: r.NextBootPin, ESPs: []wire.ESPStatus{}}
	if r.Firmware != nil {
		out.BootCurrent = r.Firmware.BootCurrent
		out.BootOrder = r.Firmware.BootOrder
		for _, be := range r.Firmware.Entries {
			out.FirmwareEntries = append(out.FirmwareEntries, wire.FirmwareBootEntry{Number: be.Number, Description: be.Description, Active: be.Active, Path: be.Path})
		}
	}
	for _, x := range r.ESPs {
		out.ESPs = append(out.ESPs, wire.ESPStatus{UUID: x.UUID, Device: x.Device, Mode: x.Mode, Versions: nonNil(x.Versions),
			InSync: x.InSync, Missing: x.Missing, Extra: x.Extra, Error: x.Error})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
