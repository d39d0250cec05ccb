package esp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berthhq/berth/internal/kernelsel"
)

// Installed returns the kernel versions with an image in /boot.
func (t *Tool) Installed() []string {
	m, _ := filepath.Glob(filepath.Join(t.path("boot"), "vmlinuz-*"))
	var out []string
	for _, f := range m {
		out = append(out, strings.TrimPrefix(filepath.Base(f), "vmlinuz-"))
	}
	slices.SortFunc(out, func(a, b string) int { return kernelsel.Compare(b, a) })
	return out
}

// Running returns the running kernel release.
func (t *Tool) Running() string {
	b, err := os.ReadFile(filepath.Join(t.Proc, "sys/kernel/osrelease"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Pins returns the permanent and next-boot pins and whether the next-boot
// file exists.
func (t *Tool) Pins() (pin, next string, nextSet bool) {
	pin, _ = t.firstLine(PinFile)
	next, nextSet = t.firstLine(NextBootPinFile)
	return pin, next, nextSet
}

// EffectivePin is the version the loaders default to: the next-boot pin if
// its file exists, else the permanent pin ("" for the newest).
func (t *Tool) EffectivePin() string {
	pin, next, nextSet := t.Pins()
	if nextSet {
		return next
	}
	return pin
}

// Manual returns the manual kernel list.
func (t *Tool) Manual() []string {
	l, _ := t.readLines(ManualKernelsFile)
	return l
}

// Kernels returns the versions to keep on the ESPs, newest first.
func (t *Tool) Kernels(installing string) []string {
	pin, next, _ := t.Pins()
	running := t.Running()
	if os.Getenv("SOURCE_DATE_EPOCH") != "" {
		running = ""
	}
	return kernelsel.Select(kernelsel.Input{Installed: t.Installed(), Running: running,
		Installing: installing, Manual: t.Manual(), Pin: pin, NextBoot: next})
}

// Cmdline returns the kernel command line: the first line of
// /etc/kernel/cmdline, or /proc/cmdline without initrd= and BOOT_IMAGE=.
func (t *Tool) Cmdline() (string, error) {
	line, ok := t.firstLine(CmdlineFile)
	if !ok {
		t.warnf("No /etc/kernel/cmdline found - falling back to /proc/cmdline")
		b, err := os.ReadFile(filepath.Join(t.Proc, "cmdline"))
		if err != nil {
			return "", fmt.Errorf("read kernel command line: %w", err)
		}
		var keep []string
		for _, f := range strings.Fields(string(b)) {
			if !strings.HasPrefix(f, "initrd=") && !strings.HasPrefix(f, "BOOT_IMAGE=") {
				keep = append(keep, f)
			}
		}
		line = strings.Join(keep, " ")
	}
	if !strings.Contains(" "+line, " root=") {
		return "", &InputError{"No root= parameter in /etc/kernel/cmdline found! Write the kernel command line (with root=…) as the first line of /etc/kernel/cmdline."}
	}
	return line, nil
}

// image is one kernel with its files in /boot.
type image struct{ version, vmlinuz, initrd string }

func (t *Tool) images(versions []string) []image {
	var out []image
	for _, v := range versions {
		im := image{v, t.path("boot/vmlinuz-" + v), t.path("boot/initrd.img-" + v)}
		if _, err := os.Stat(im.vmlinuz); err != nil {
			t.warnf("No linux-image /boot/vmlinuz-%s found - skipping", v)
			continue
		}
		if _, err := os.Stat(im.initrd); err != nil {
			t.warnf("No initrd-image /boot/initrd.img-%s found - skipping", v)
			continue
		}
		out = append(out, im)
	}
	return out
}

// EntryConf renders a systemd-boot loader entry exactly as
// proxmox-boot-tool does (keys padded to 9 columns).
func EntryConf(title, version, options string) string {
	return fmt.Sprintf("title    %s\nversion  %s\noptions  %s\nlinux    /EFI/proxmox/%s/vmlinuz-%s\ninitrd   /EFI/proxmox/%s/initrd.img-%s\n",
		title, version, options, version, version, version, version)
}

// LoaderConf returns loader.conf with every `default` line set to def (or
// one appended), keeping all other lines.
func LoaderConf(old, def string) string {
	if old == "" {
		old = "timeout 3\n"
	}
	var lines []string
	found := false
	for _, l := range strings.Split(strings.TrimRight(old, "\n"), "\n") {
		if strings.HasPrefix(l, "default ") || l == "default" {
			l = "default " + def
			found = true
		}
		lines = append(lines, l)
	}
	if !found {
		lines = append(lines, "default "+def)
	}
	return strings.Join(lines, "\n") + "\n"
}

// Refresh copies the selected kernels onto every listed ESP. installing is
// the version a package hook is installing ("" for none). One ESP failing
// does not stop the others; the error then names every failed ESP.
func (t *Tool) Refresh(ctx context.Context, installing string) error {
	unlock, err := t.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	uuids, err := t.UUIDs()
	if errors.Is(err, ErrNotConfigured) {
		t.warnf("No /etc/kernel/proxmox-boot-uuids found, skipping ESP sync.")
		return nil
	}
	if err != nil {
		return err
	}
	cmdline, err := t.Cmdline()
	if err != nil {
		return err
	}
	imgs := t.images(t.Kernels(installing))
	parts, err := t.Partitions()
	if err != nil {
		return err
	}
	var failed []string
	for _, u := range uuids {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := t.FindUUID(u, parts)
		if err != nil {
			t.warnf("WARN: /dev/disk/by-uuid/%s does not exist - clean '/etc/kernel/proxmox-boot-uuids'! - skipping", u)
			failed = append(failed, u+": not found")
			continue
		}
		if err := t.syncESP(ctx, p, imgs, cmdline); err != nil {
			t.warnf("E: syncing ESP %s (%s) failed: %v", u, p.Path, err)
			failed = append(failed, u+": "+err.Error())
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d ESPs not synced: %s", len(failed), len(uuids), strings.Join(failed, "; "))
	}
	return nil
}

// modeOf tells how an opened ESP boots: "grub" if it carries berth's or
// proxmox-boot-tool's GRUB marker, "systemd-boot" if it has a loader
// directory, "" if it was never initialised.
func (v *volume) mode() string {
	switch {
	case v.exists("EFI/proxmox/grubx64.efi"), v.isDir("grub") && !v.isDir("loader"):
		return "grub"
	case v.isDir("loader") && v.isDir("EFI/proxmox"):
		return "systemd-boot"
	}
	return ""
}

func (t *Tool) syncESP(ctx context.Context, p Partition, imgs []image, cmdline string) error {
	v, err := t.open(p)
	if err != nil {
		return err
	}
	defer v.close()
	mode := v.mode()
	switch mode {
	case "":
		t.warnf("%s contains no loader.conf or grub directory - skipping (run 'berth boot init %s')", p.Path, p.Path)
		return fmt.Errorf("not initialised")
	case "grub":
		err = t.syncGrub(ctx, v, imgs, cmdline)
	default:
		err = t.syncSystemdBoot(ctx, v, imgs, cmdline)
	}
	if err != nil {
		return err
	}
	if err := v.disk.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p.DiskPath, err)
	}
	return nil
}

func (t *Tool) syncSystemdBoot(ctx context.Context, v *volume, imgs []image, cmdline string) error {
	t.warnf("Copying and configuring kernels on /dev/disk/by-uuid/%s", v.p.UUID)
	if err := v.removeLeftovers(ctx, "loader", "loader/entries"); err != nil {
		return err
	}
	keep := map[string]bool{}
	// 1. Kernels and initrds first: an entry never points at a missing file.
	for _, im := range imgs {
		keep[im.version] = true
		dir := "EFI/proxmox/" + im.version
		_ = v.removeLeftovers(ctx, dir)
		t.warnf("\tCopying kernel and creating boot-entry for %s", im.version)
		v.strict = !v.exists("loader/entries/proxmox-" + im.version + ".conf")
		err := v.putNew(ctx, dir, []string{im.vmlinuz, im.initrd})
		v.strict = false
		if err != nil {
			return err
		}
	}
	// 2. Entries, each replaced in one step.
	for _, im := range imgs {
		if _, err := v.put(ctx, "loader/entries/proxmox-"+im.version+".conf", "", []byte(EntryConf(t.Title, im.version, cmdline))); err != nil {
			return err
		}
	}
	// 3. loader.conf last: the default only ever names a complete entry.
	def := "proxmox-*"
	if pin := t.EffectivePin(); pin != "" && keep[pin] {
		def = "proxmox-" + pin + ".conf"
	} else if pin != "" {
		t.warnf("W: pinned kernel %s is not on the ESP (no /boot/vmlinuz-%s?) - defaulting to the newest", pin, pin)
	}
	old, _ := v.fs.ReadFile("loader/loader.conf")
	if _, err := v.put(ctx, "loader/loader.conf", "", []byte(LoaderConf(string(old), def))); err != nil {
		return err
	}
	// 4. Stale kernels after: entry first, then its files.
	ents, _ := v.fs.ReadDir("EFI/proxmox")
	for _, e := range ents {
		if !e.IsDir {
			if e.Name != "grubx64.efi" {
				t.warnf("\t%s/EFI/proxmox/%s is not a directory - skipping", v.p.Path, e.Name)
			}
			continue
		}
		if keep[e.Name] {
			continue
		}
		t.warnf("\tRemoving old version %s", e.Name)
		if err := v.remove(ctx, "loader/entries/proxmox-"+e.Name+".conf"); err != nil {
			return err
		}
		if err := v.remove(ctx, "EFI/proxmox/"+e.Name); err != nil {
			return err
		}
	}
	// Entries whose kernel directory is gone (from an interrupted removal).
	if ents, err := v.fs.ReadDir("loader/entries"); err == nil {
		for _, e := range ents {
			ver, ok := strings.CutSuffix(strings.TrimPrefix(e.Name, "proxmox-"), ".conf")
			if ok && strings.HasPrefix(e.Name, "proxmox-") && !keep[ver] {
				if err := v.remove(ctx, path.Join("loader/entries", e.Name)); err != nil {
					return err
				}
			}
		}
	}
	return t.verifySystemdBoot(v, imgs, cmdline, def)
}

// verifySystemdBoot re-reads the ESP after a sync: every kernel and
// initrd is there with its source's size (their contents were compared
// byte for byte when written), and every entry and loader.conf has
// exactly the intended contents.
func (t *Tool) verifySystemdBoot(v *volume, imgs []image, cmdline, def string) error {
	for _, im := range imgs {
		for _, f := range []string{im.vmlinuz, im.initrd} {
			if err := v.sameSize("EFI/proxmox/"+im.version+"/"+filepath.Base(f), f); err != nil {
				return err
			}
		}
		if err := v.same("loader/entries/proxmox-"+im.version+".conf", "", []byte(EntryConf(t.Title, im.version, cmdline))); err != nil {
			return err
		}
	}
	b, err := v.fs.ReadFile("loader/loader.conf")
	if err != nil {
		return fmt.Errorf("verify loader.conf: %w", err)
	}
	if !strings.Contains(string(b), "default "+def+"\n") {
		return fmt.Errorf("verify loader.conf: no 'default %s' line after writing it", def)
	}
	return nil
}

// sameSize checks that dst exists with the size of the host file src.
func (v *volume) sameSize(dst, src string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	e, err := v.fs.Stat(dst)
	if err != nil {
		return fmt.Errorf("verify on %s: %w", v.p.Name, err)
	}
	if int64(e.Size) != st.Size() {
		return fmt.Errorf("verify on %s: %s has %d bytes, its source %d", v.p.Name, dst, e.Size, st.Size())
	}
	return nil
}

func (v *volume) same(dst, src string, data []byte) error {
	if err := v.equal(dst, src, data); err != nil {
		return fmt.Errorf("verify on %s: %w", v.p.Name, err)
	}
	return nil
}

// Entry is a parsed systemd-boot loader entry (Boot Loader Specification
// type #1) as far as berth uses it.
type Entry struct {
	Title, Version, Options, Linux string
	Initrd                         []string
}

// ParseEntry parses a loader entry: "key value" lines, '#' comments;
// unknown keys are ignored and initrd may repeat.
func ParseEntry(s string) Entry {
	var e Entry
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		v = strings.TrimSpace(v)
		switch k {
		case "title":
			e.Title = v
		case "version":
			e.Version = v
		case "options":
			e.Options = v
		case "linux":
			e.Linux = v
		case "initrd":
			e.Initrd = append(e.Initrd, v)
		}
	}
	return e
}
