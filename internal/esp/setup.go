package esp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berthhq/berth/internal/gpt"
)

// MinSize is the smallest partition format and init accept.
const MinSize = 256 << 20

// Host paths of the boot loader binaries berth installs.
var (
	SystemdBootEFI = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	GrubEFIModules = "/usr/lib/grub/x86_64-efi"
	ShimEFI        = "/usr/lib/shim/shimx64.efi.signed"
)

// check runs the safety checks format and init share. force turns every
// refusal except a missing device into a warning.
func (t *Tool) check(arg string, force bool, extra func(p Partition) []string) (Partition, error) {
	p, err := t.FindPartition(arg)
	if err != nil {
		return p, err
	}
	t.outf("UUID=%q SIZE=\"%d\" FSTYPE=%q PARTTYPE=%q PKNAME=%q MOUNTPOINT=%q", p.UUID, p.Size, p.FSType, p.Type, p.Disk, p.MountPoint)
	var bad []string
	if p.Size < MinSize {
		bad = append(bad, fmt.Sprintf("E: '%s' is too small (<256M): it has %d MiB; an ESP with several kernels needs at least 256 MiB.", arg, p.Size>>20))
	}
	if p.MountPoint != "" {
		bad = append(bad, fmt.Sprintf("E: '%s' is mounted on '%s' - exiting. Unmount it first.", arg, p.MountPoint))
	}
	bad = append(bad, extra(p)...)
	if len(bad) == 0 {
		return p, nil
	}
	if force {
		for _, b := range bad {
			t.warnf("W: --force given, ignoring: %s", strings.TrimPrefix(b, "E: "))
		}
		return p, nil
	}
	return p, &InputError{strings.Join(bad, "\n") + "\nNothing was changed. If you are sure, repeat the command with --force."}
}

// Format makes a FAT32 file system on an ESP partition, setting its GPT
// type to EF00 first when needed.
func (t *Tool) Format(ctx context.Context, arg string, force bool) error {
	p, err := t.check(arg, force, func(p Partition) []string {
		var bad []string
		if p.Type == "" {
			bad = append(bad, fmt.Sprintf("E: '%s' is not on a GPT disk: ESPs need a GPT partition of type EF00.", arg))
		} else if p.Type != gpt.TypeESP.String() {
			bad = append(bad, fmt.Sprintf("E: '%s' has partition type %s, not an EFI system partition (%s); --force sets the type to EF00.", arg, p.Type, gpt.TypeESP))
		}
		if p.FSType != "" {
			bad = append(bad, fmt.Sprintf("E: '%s' contains a filesystem ('%s') - exiting (use --force to override)", arg, p.FSType))
		}
		return bad
	})
	if err != nil {
		return err
	}
	if p.Type != "" && p.Type != gpt.TypeESP.String() {
		t.outf("Setting partition type of '%s' to '%s'..", arg, gpt.TypeESP)
		if err := t.run(ctx, "sgdisk", fmt.Sprintf("-t%d:%s", p.Number, gpt.TypeESP), p.DiskPath); err != nil {
			return err
		}
		if err := t.run(ctx, "partprobe", p.DiskPath); err != nil {
			t.Log.Debug("partprobe", "err", err)
		}
	}
	t.outf("Formatting '%s' as vfat..", arg)
	unlock, err := t.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := t.mkfs(ctx, p); err != nil {
		return err
	}
	t.outf("Done.")
	return nil
}

// mkfs writes FAT32 through the disk node at the partition's offset, so
// reads through the same node see it at once.
func (t *Tool) mkfs(ctx context.Context, p Partition) error {
	return t.run(ctx, "mkfs.fat", "-F", "32", "-I", "--offset", fmt.Sprint(p.Start/512), p.DiskPath, fmt.Sprint(p.Size/1024))
}

func (t *Tool) run(ctx context.Context, name string, args ...string) error {
	c := exec.CommandContext(ctx, name, args...)
	out, err := c.CombinedOutput()
	if len(out) > 0 {
		t.Log.Debug(name, "output", string(out))
	}
	if err != nil {
		return fmt.Errorf("%s %s: %s: %w", name, strings.Join(args, " "), strings.TrimSpace(string(out)), err)
	}
	return nil
}

// Modes of an ESP.
const (
	ModeSystemdBoot = "systemd-boot"
	ModeGrub        = "grub"
)

// EFIBooted tells whether the running system booted through UEFI.
func (t *Tool) EFIBooted() bool {
	_, err := os.Stat(filepath.Join(t.Sys, "firmware/efi"))
	return err == nil
}

// Init installs a boot loader on a FAT ESP and adds it to the ESP list.
// mode is "", "grub" or "systemd-boot" ("" keeps GRUB if it is there and
// otherwise follows the running firmware: systemd-boot on UEFI, GRUB on
// BIOS). With refresh it syncs all ESPs afterwards (init; reinit does not).
func (t *Tool) Init(ctx context.Context, arg, mode string, force, refresh bool) error {
	switch mode {
	case "", ModeGrub, ModeSystemdBoot:
	default:
		return &InputError{fmt.Sprintf("E: unknown mode %q: use grub or systemd-boot (or nothing)", mode)}
	}
	p, err := t.check(arg, force, func(p Partition) []string {
		var bad []string
		if p.Type != gpt.TypeESP.String() {
			bad = append(bad, fmt.Sprintf("E: '%s' has wrong partition type (!= %s). Set it with 'sgdisk -t%d:EF00 %s' or use 'berth boot format %s --force'.", arg, gpt.TypeESP, p.Number, p.DiskPath, arg))
		}
		if p.FSType != "vfat" {
			bad = append(bad, fmt.Sprintf("E: '%s' has wrong filesystem (!= vfat). Format it first with 'berth boot format %s'.", arg, arg))
		}
		return bad
	})
	if err != nil {
		return err
	}
	if p.UUID == "" {
		return &InputError{fmt.Sprintf("E: '%s' has no UUID set, required for mounting. Format it with 'berth boot format %s'.", arg, arg)}
	}
	unlock, err := t.lock(ctx)
	if err != nil {
		return err
	}
	err = t.install(ctx, p, mode)
	unlock()
	if err != nil {
		return err
	}
	t.outf("Adding '%s' to list of synced ESPs..", arg)
	l, _ := t.readLines(UUIDsFile)
	if err := t.writeLines(UUIDsFile, append(l, p.UUID)); err != nil {
		return err
	}
	if refresh {
		t.outf("Refreshing kernels and initrds..")
		return t.Refresh(ctx, "")
	}
	return nil
}

func (t *Tool) install(ctx context.Context, p Partition, mode string) error {
	v, err := t.open(p)
	if err != nil {
		return err
	}
	defer v.close()
	if mode == "" {
		switch {
		case v.exists("EFI/proxmox/grubx64.efi"):
			mode = ModeGrub
		case t.EFIBooted() || v.mode() == ModeSystemdBoot:
			mode = ModeSystemdBoot
		default:
			mode = ModeGrub
		}
	}
	if mode == ModeGrub {
		err = t.installGrub(ctx, v)
	} else {
		err = t.installSystemdBoot(ctx, v)
	}
	if err != nil {
		return err
	}
	return v.disk.Sync()
}

func (t *Tool) installSystemdBoot(ctx context.Context, v *volume) error {
	t.outf("Installing systemd-boot..")
	if _, err := os.Stat(SystemdBootEFI); err != nil {
		return &InputError{fmt.Sprintf("E: %s is not available - make sure systemd-boot-efi is installed (apt install systemd-boot-efi)", SystemdBootEFI)}
	}
	for _, d := range []string{"EFI/proxmox", "EFI/Linux", "loader/entries"} {
		if err := v.mkdirAll(ctx, d); err != nil {
			return err
		}
	}
	for _, dst := range []string{"EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI"} {
		if _, err := v.put(ctx, dst, SystemdBootEFI, nil); err != nil {
			return err
		}
	}
	if _, err := v.put(ctx, "loader/entries.srel", "", []byte("type1\n")); err != nil {
		return err
	}
	t.outf("Configuring systemd-boot..")
	// Unlike proxmox-boot-tool, an existing loader.conf (and its pinned
	// default) is kept; refresh sets the default.
	if !v.exists("loader/loader.conf") {
		if _, err := v.put(ctx, "loader/loader.conf", "", []byte("timeout 3\ndefault proxmox-*\n")); err != nil {
			return err
		}
	}
	return nil
}

// Reinit re-installs the boot loader on every listed ESP, keeping each
// one's mode.
func (t *Tool) Reinit(ctx context.Context) error {
	unlock, err := t.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	uuids, err := t.UUIDs()
	if err != nil {
		return err
	}
	parts, err := t.Partitions()
	if err != nil {
		return err
	}
	var failed []string
	for _, u := range uuids {
		p, err := t.FindUUID(u, parts)
		if err != nil {
			t.warnf("WARN: /dev/disk/by-uuid/%s does not exist - clean '/etc/kernel/proxmox-boot-uuids'! - skipping", u)
			continue
		}
		if err := t.install(ctx, p, ""); err != nil {
			t.warnf("E: reinit of %s (%s) failed: %v", u, p.Path, err)
			failed = append(failed, u)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("reinit failed on %s", strings.Join(failed, ", "))
	}
	return nil
}

// Clean removes ESPs that no longer exist from the list.
func (t *Tool) Clean(dryRun bool) error {
	l, err := t.readLines(UUIDsFile)
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotConfigured
	}
	if err != nil {
		return err
	}
	parts, err := t.Partitions()
	if err != nil {
		return err
	}
	var keep []string
	for _, u := range l {
		fmt.Fprintf(t.Stdout, "Checking whether ESP '%s' exists.. ", u)
		if _, err := t.FindUUID(u, parts); err == nil {
			t.outf("Found!")
			keep = append(keep, u)
		} else {
			t.outf("Not found!")
		}
	}
	if dryRun {
		return nil
	}
	t.outf("Sorting and removing duplicate ESPs..")
	return t.writeLines(UUIDsFile, keep)
}

// KernelAdd adds a version to the manual kernel list.
func (t *Tool) KernelAdd(ver string) error {
	if err := t.needImage(ver, "not adding"); err != nil {
		return err
	}
	if err := t.writeLines(ManualKernelsFile, append(t.Manual(), ver)); err != nil {
		return err
	}
	t.outf("Added kernel '%s' to manual kernel list. Use the 'refresh' command to update the ESPs.", ver)
	return nil
}

func (t *Tool) needImage(ver, what string) error {
	if ver == "" || strings.ContainsAny(ver, "/ \n") {
		return &InputError{fmt.Sprintf("E: invalid kernel version %q", ver)}
	}
	if _, err := os.Stat(t.path("boot/vmlinuz-" + ver)); err != nil {
		return &InputError{fmt.Sprintf("E: no kernel image found in /boot for '%s', %s.\n\nPossible kernel versions are:\n%s", ver, what, strings.Join(t.Installed(), "\n"))}
	}
	return nil
}

// KernelRemove removes a version from the manual kernel list.
func (t *Tool) KernelRemove(ver string) error {
	l := t.Manual()
	if !slices.Contains(l, ver) {
		t.outf("Kernel '%s' not found in manual kernel list.", ver)
		return nil
	}
	l = slices.DeleteFunc(l, func(s string) bool { return s == ver })
	if err := t.writeLines(ManualKernelsFile, l); err != nil {
		return err
	}
	t.outf("Removed kernel '%s' from manual kernel list. Use the 'refresh' command to update the ESPs.", ver)
	return nil
}

// KernelList prints the manual, automatic and pinned kernels.
func (t *Tool) KernelList() {
	manual := t.Manual()
	t.outf("Manually selected kernels:")
	if len(manual) == 0 {
		t.outf("None.")
	}
	for _, m := range manual {
		t.outf("%s", m)
	}
	t.outf("\nAutomatically selected kernels:")
	for _, k := range t.Kernels("") {
		if !slices.Contains(manual, k) {
			t.outf("%s", k)
		}
	}
	pin, next, nextSet := t.Pins()
	if pin != "" {
		t.outf("\nPinned kernel:\n%s", pin)
	}
	if nextSet && next != "" {
		t.outf("\nKernel pinned on next-boot:\n%s", next)
	}
}

// KernelPin pins a version permanently or for the next boot only.
func (t *Tool) KernelPin(ver string, nextBoot bool) error {
	if err := t.needImage(ver, "not setting default"); err != nil {
		return err
	}
	file := PinFile
	if nextBoot {
		file = NextBootPinFile
	}
	if old, ok := t.firstLine(file); ok && old != "" && old != ver {
		t.outf("Overriding previously pinned version '%s' with '%s'", old, ver)
	}
	if err := WriteAtomic(t.path(file), []byte(ver+"\n"), 0o644); err != nil {
		return err
	}
	t.outf("Set kernel '%s' in /%s. Use the 'refresh' command to update the ESPs.", ver, file)
	if nextBoot {
		t.outf("Pinned for next boot only.")
	}
	return nil
}

// KernelUnpin removes the next-boot pin and, unless nextBootOnly, the
// permanent pin.
func (t *Tool) KernelUnpin(nextBootOnly bool) error {
	if err := os.Remove(t.path(NextBootPinFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	t.outf("Removed /%s.", NextBootPinFile)
	if nextBootOnly {
		return nil
	}
	old, _ := t.firstLine(PinFile)
	if err := os.Remove(t.path(PinFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	t.outf("Removed /%s.", PinFile)
	if old != "" {
		t.outf("Unpinned kernel '%s'. Use the 'refresh' command to update the ESPs.", old)
	}
	return nil
}
