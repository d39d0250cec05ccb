package esp

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Files install-hooks writes, relative to Root.
const (
	KernelPostinstHook = "etc/kernel/postinst.d/zz-berth-boot"
	KernelPostrmHook   = "etc/kernel/postrm.d/zz-berth-boot"
	InitramfsHook      = "etc/initramfs/post-update.d/berth-boot"
	CleanupUnit        = "etc/systemd/system/berth-boot-cleanup.service"
	cleanupUnitWant    = "etc/systemd/system/multi-user.target.wants/berth-boot-cleanup.service"
)

// HookFiles returns the hook scripts and unit install-hooks writes, keyed
// by root-relative path, for the berth binary at bin.
func HookFiles(bin string) map[string]string {
	q := shellQuote(bin)
	kernel := func(what string) string {
		return fmt.Sprintf(`#!/bin/sh
# Installed by 'berth boot install-hooks': keep every ESP in
# /etc/kernel/proxmox-boot-uuids in sync when a kernel is %s.
set -e
[ -s /etc/kernel/proxmox-boot-uuids ] || exit 0
exec %s boot refresh --installing "${1:-}"
`, what, q)
	}
	return map[string]string{
		KernelPostinstHook: kernel("installed"),
		KernelPostrmHook:   strings.Replace(kernel("removed"), `--installing "${1:-}"`, "", 1),
		InitramfsHook: fmt.Sprintf(`#!/bin/sh
# Installed by 'berth boot install-hooks': copy a regenerated initrd to
# every ESP. During a kernel package run the kernel hook refreshes later.
set -e
[ -n "${INITRAMFS_TOOLS_KERNEL_HOOK:-}" ] && exit 0
[ -s /etc/kernel/proxmox-boot-uuids ] || exit 0
exec %s boot refresh
`, q),
		CleanupUnit: fmt.Sprintf(`# Installed by 'berth boot install-hooks'.
[Unit]
Description=Clear the next-boot kernel pin of berth boot and refresh the ESPs
ConditionPathExists=/etc/kernel/next-boot-pin
After=systemd-remount-fs.service

[Service]
Type=oneshot
ExecStart=%s boot kernel unpin --next-boot
ExecStart=%s boot refresh

[Install]
WantedBy=multi-user.target
`, bin, bin),
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// InstallHooks writes the kernel and initramfs hooks and the boot-time
// unit that clears the next-boot pin, and enables the unit.
func (t *Tool) InstallHooks(bin string) error {
	if !filepath.IsAbs(bin) {
		return &InputError{fmt.Sprintf("E: berth binary path %q must be absolute", bin)}
	}
	for rel, body := range HookFiles(bin) {
		mode := os.FileMode(0o755)
		if strings.HasSuffix(rel, ".service") {
			mode = 0o644
		}
		if err := WriteAtomic(t.path(rel), []byte(body), mode); err != nil {
			return err
		}
		t.outf("Installed /%s", rel)
	}
	want := t.path(cleanupUnitWant)
	if err := os.MkdirAll(filepath.Dir(want), 0o755); err != nil {
		return err
	}
	_ = os.Remove(want)
	if err := os.Symlink("/"+CleanupUnit, want); err != nil {
		return fmt.Errorf("enable %s: %w", CleanupUnit, err)
	}
	t.outf("Enabled berth-boot-cleanup.service")
	for _, pbt := range []string{"etc/kernel/postinst.d/zz-proxmox-boot", "etc/kernel/postrm.d/zz-proxmox-boot"} {
		if _, err := os.Stat(t.path(pbt)); err == nil {
			t.warnf("W: /%s is installed too: both tools would sync the ESPs (same files, harmless but twice the work); remove proxmox-kernel-helper's hooks or berth's", pbt)
		}
	}
	return nil
}
