package esp

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// GrubCfg renders the grub.cfg berth writes onto a GRUB-mode ESP: one
// menu entry per kernel (newest first) with the kernels at the ESP root,
// and the pinned version (or the newest) as default.
func GrubCfg(title, uuid, cmdline, def string, versions []string) string {
	var b strings.Builder
	b.WriteString("# Written by 'berth boot refresh'; changes are lost at the next refresh.\n")
	b.WriteString("set timeout=3\n")
	if def == "" && len(versions) > 0 {
		def = versions[0]
	}
	fmt.Fprintf(&b, "set default=\"berth-%s\"\n", def)
	fmt.Fprintf(&b, "search --no-floppy --fs-uuid --set=root %s\n", uuid)
	for _, v := range versions {
		fmt.Fprintf(&b, "menuentry '%s, with Linux %s' --id berth-%s {\n\tlinux /vmlinuz-%s %s\n\tinitrd /initrd.img-%s\n}\n",
			strings.ReplaceAll(title, "'", ""), v, v, v, cmdline, v)
	}
	return b.String()
}

// installGrub builds a standalone GRUB EFI image whose embedded config
// finds this ESP by its volume ID and loads grub/grub.cfg, and installs it
// as EFI/proxmox/grubx64.efi and the removable-media path.
func (t *Tool) installGrub(ctx context.Context, v *volume) error {
	t.outf("Installing grub x86_64 target..")
	if _, err := os.Stat(GrubEFIModules); err != nil {
		return &InputError{fmt.Sprintf("E: %s is not available - install grub-efi-amd64-bin", GrubEFIModules)}
	}
	dir, err := os.MkdirTemp("", "berth-grub-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	early := fmt.Sprintf("search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/grub\nconfigfile ($root)/grub/grub.cfg\n", v.p.UUID)
	if err := os.WriteFile(filepath.Join(dir, "early.cfg"), []byte(early), 0o644); err != nil {
		return err
	}
	img := filepath.Join(dir, "grubx64.efi")
	if err := t.run(ctx, "grub-mkimage", "-d", GrubEFIModules, "-O", "x86_64-efi", "-o", img, "-c", filepath.Join(dir, "early.cfg"),
		"-p", "/grub", "part_gpt", "part_msdos", "fat", "normal", "linux", "configfile", "search", "search_fs_uuid",
		"echo", "test", "ls", "reboot", "all_video", "efi_gop", "gzio"); err != nil {
		return err
	}
	if err := v.mkdirAll(ctx, "grub"); err != nil {
		return err
	}
	if _, err := v.put(ctx, "EFI/proxmox/grubx64.efi", img, nil); err != nil {
		return err
	}
	t.outf("Installing grub x86_64 target (removable)..")
	boot := img
	if _, err := os.Stat(ShimEFI); err == nil {
		// shim loads grubx64.efi from its own directory.
		boot = ShimEFI
		if _, err := v.put(ctx, "EFI/BOOT/grubx64.efi", img, nil); err != nil {
			return err
		}
	}
	if _, err := v.put(ctx, "EFI/BOOT/BOOTX64.EFI", boot, nil); err != nil {
		return err
	}
	return t.installBIOS(ctx, v, early)
}

func (t *Tool) syncGrub(ctx context.Context, v *volume, imgs []image, cmdline string) error {
	t.warnf("Copying and configuring kernels on /dev/disk/by-uuid/%s", v.p.UUID)
	if err := v.removeLeftovers(ctx, "", "grub"); err != nil {
		return err
	}
	keep := map[string]bool{}
	var versions []string
	for _, im := range imgs {
		t.warnf("\tCopying kernel %s", im.version)
		keep[filepath.Base(im.vmlinuz)], keep[filepath.Base(im.initrd)] = true, true
		versions = append(versions, im.version)
		v.strict = true // grub.cfg may already name these files
		err := v.putNew(ctx, "", []string{im.vmlinuz, im.initrd})
		v.strict = false
		if err != nil {
			return err
		}
	}
	def := ""
	if pin := t.EffectivePin(); pin != "" && keep["vmlinuz-"+pin] {
		def = pin
	}
	cfg := GrubCfg(t.Title, v.p.UUID, cmdline, def, versions)
	if _, err := v.put(ctx, "grub/grub.cfg", "", []byte(cfg)); err != nil {
		return err
	}
	ents, _ := v.fs.ReadDir("")
	for _, e := range ents {
		if e.IsDir || keep[e.Name] || !(strings.HasPrefix(e.Name, "vmlinuz-") || strings.HasPrefix(e.Name, "initrd.img-")) {
			continue
		}
		t.warnf("\tRemoving old file %s", e.Name)
		if err := v.remove(ctx, e.Name); err != nil {
			return err
		}
	}
	for _, im := range imgs {
		for _, f := range []string{im.vmlinuz, im.initrd} {
			if err := v.sameSize(filepath.Base(f), f); err != nil {
				return err
			}
		}
	}
	return v.same("grub/grub.cfg", "", []byte(cfg))
}
