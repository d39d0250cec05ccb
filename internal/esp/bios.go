package esp

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berthhq/berth/internal/gpt"
)

// GrubPCModules is where grub-pc-bin keeps the i386-pc GRUB images.
var GrubPCModules = "/usr/lib/grub/i386-pc"

// Offsets in GRUB's i386-pc boot.img and the first sector of core.img
// (grub-core/boot/i386/pc/boot.S, diskboot.S), as grub-bios-setup patches
// them when it embeds core.img in a BIOS boot partition.
const (
	bootBPBStart     = 0x03
	bootBPBEnd       = 0x5a
	bootKernelSector = 0x5c
	bootDrive        = 0x64
	bootDriveCheck   = 0x66
	bootNTMagic      = 0x1b8
	bootPartEnd      = 0x1fe
	coreBlocklist    = 512 - 12
	coreSegment      = 0x820
)

// biosBootPartition returns the BIOS boot partition (EF02) of the disk
// holding the ESP, if there is one.
func (t *Tool) biosBootPartition(v *volume) (gpt.Partition, bool) {
	tab, err := gpt.Read(v.disk, 512)
	if err != nil {
		return gpt.Partition{}, false
	}
	for _, p := range tab.Partitions {
		if p.Type == gpt.TypeBIOSBoot {
			return p, true
		}
	}
	return gpt.Partition{}, false
}

// installBIOS makes the disk of the ESP boot GRUB from legacy BIOS, as
// grub-install --target=i386-pc would (which needs a mounted boot
// directory): a core.img that finds the ESP by volume ID and reads
// grub/grub.cfg from it is embedded in the BIOS boot partition, and
// GRUB's boot.img, pointed at it, goes into the MBR (keeping the
// protective partition table). The core is written first, the MBR last.
func (t *Tool) installBIOS(ctx context.Context, v *volume, early string) error {
	bp, ok := t.biosBootPartition(v)
	if !ok {
		return nil
	}
	if _, err := os.Stat(filepath.Join(GrubPCModules, "boot.img")); err != nil {
		t.warnf("W: %s has a BIOS boot partition but grub-pc-bin is not installed - legacy BIOS boot not set up", v.p.DiskPath)
		return nil
	}
	t.outf("Installing grub i386-pc target into the BIOS boot partition %d of %s..", bp.Number, v.p.DiskPath)
	dir, err := os.MkdirTemp("", "berth-grub-pc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "early.cfg"), []byte(early), 0o644); err != nil {
		return err
	}
	img := filepath.Join(dir, "core.img")
	if err := t.run(ctx, "grub-mkimage", "-d", GrubPCModules, "-O", "i386-pc", "-o", img, "-c", filepath.Join(dir, "early.cfg"),
		"-p", "/grub", "biosdisk", "part_gpt", "part_msdos", "fat", "normal", "linux", "configfile", "search",
		"search_fs_uuid", "echo", "test", "ls", "reboot", "gzio"); err != nil {
		return err
	}
	core, err := os.ReadFile(img)
	if err != nil {
		return err
	}
	boot, err := os.ReadFile(filepath.Join(GrubPCModules, "boot.img"))
	if err != nil {
		return err
	}
	mbr := make([]byte, 512)
	if _, err := v.disk.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read MBR of %s: %w", v.p.DiskPath, err)
	}
	newMBR, newCore, err := EmbedGrub(boot, core, mbr, bp.FirstLBA, bp.LastLBA-bp.FirstLBA+1)
	if err != nil {
		return fmt.Errorf("%s: %w", v.p.DiskPath, err)
	}
	if t.Hook != nil {
		if err := t.Hook("write GRUB core to the BIOS boot partition"); err != nil {
			return err
		}
	}
	if _, err := v.disk.WriteAt(newCore, int64(bp.FirstLBA)*512); err != nil {
		return fmt.Errorf("write GRUB core: %w", err)
	}
	if err := v.disk.Sync(); err != nil {
		return err
	}
	if t.Hook != nil {
		if err := t.Hook("write GRUB boot sector to the MBR"); err != nil {
			return err
		}
	}
	if _, err := v.disk.WriteAt(newMBR, 0); err != nil {
		return fmt.Errorf("write MBR: %w", err)
	}
	t.Stats.Ops += 2
	t.Stats.Bytes += int64(len(newCore) + 512)
	return v.disk.Sync()
}

// EmbedGrub returns the MBR and core image grub-bios-setup would write to
// embed core in the sectors [start, start+sectors) of a disk whose current
// first sector is mbr.
func EmbedGrub(boot, core, mbr []byte, start, sectors uint64) ([]byte, []byte, error) {
	if len(boot) != 512 || len(mbr) != 512 {
		return nil, nil, fmt.Errorf("boot.img and the MBR must be 512 bytes")
	}
	nsec := (uint64(len(core)) + 511) / 512
	if nsec < 2 || nsec > sectors || nsec > 0xffff {
		return nil, nil, fmt.Errorf("GRUB core of %d sectors does not fit the BIOS boot partition of %d sectors", nsec, sectors)
	}
	c := make([]byte, nsec*512)
	copy(c, core)
	// The first sector's block list: the rest of core, right after it.
	binary.LittleEndian.PutUint64(c[coreBlocklist:], start+1)
	binary.LittleEndian.PutUint16(c[coreBlocklist+8:], uint16(nsec-1))
	binary.LittleEndian.PutUint16(c[coreBlocklist+10:], coreSegment)
	m := append([]byte(nil), boot...)
	copy(m[bootBPBStart:bootBPBEnd], mbr[bootBPBStart:bootBPBEnd])
	copy(m[bootNTMagic:bootPartEnd], mbr[bootNTMagic:bootPartEnd])
	binary.LittleEndian.PutUint64(m[bootKernelSector:], start)
	m[bootDrive] = 0xff
	// A hard disk: skip boot.img's floppy/drive check (two NOPs).
	m[bootDriveCheck], m[bootDriveCheck+1] = 0x90, 0x90
	m[510], m[511] = 0x55, 0xAA
	return m, c, nil
}
