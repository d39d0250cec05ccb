package esp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berthhq/berth/internal/fat"
	"github.com/berthhq/berth/internal/gpt"
)

// Partition is a partition found through sysfs, with what its disk's GPT
// and its first sectors say about it.
type Partition struct {
	// Name is the kernel name ("loop0p2", "sda2"); Disk its parent ("loop0").
	Name, Disk string
	Number     int
	// Start and Size are in bytes; Start is the offset inside Disk.
	Start, Size int64
	// DiskPath is the parent device node, which berth reads and writes at
	// Start (so it works where no partition node exists).
	DiskPath string
	// Path is the partition's own device node.
	Path string
	// Type is the GPT partition type GUID ("" if the disk has no GPT).
	Type string
	// FSType is what the first sectors hold ("vfat", "ext4", …, or "").
	FSType string
	// UUID is the FAT volume ID (XXXX-XXXX) for vfat.
	UUID string
	// MountPoint is where the partition is mounted ("" if not).
	MountPoint string
	devnum     string
}

// Partitions lists every partition the kernel knows, reading each disk's
// GPT once.
func (t *Tool) Partitions() ([]Partition, error) {
	dir := filepath.Join(t.Sys, "class/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	mounts := t.mounts()
	tables := map[string]*gpt.Table{}
	var out []Partition
	for _, e := range ents {
		p, err := t.partition(e.Name(), tables, mounts)
		if err != nil {
			t.Log.Debug("skip block device", "name", e.Name(), "err", err)
			continue
		}
		if p != nil {
			out = append(out, *p)
		}
	}
	return out, nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// partition reads one sysfs block entry; nil if it is not a partition.
func (t *Tool) partition(name string, tables map[string]*gpt.Table, mounts map[string]string) (*Partition, error) {
	sysdir := filepath.Join(t.Sys, "class/block", name)
	num, err := readInt(filepath.Join(sysdir, "partition"))
	if err != nil {
		return nil, nil
	}
	real, err := filepath.EvalSymlinks(sysdir)
	if err != nil {
		return nil, err
	}
	p := &Partition{Name: name, Disk: filepath.Base(filepath.Dir(real)), Number: int(num)}
	start, err := readInt(filepath.Join(sysdir, "start"))
	if err != nil {
		return nil, err
	}
	size, err := readInt(filepath.Join(sysdir, "size"))
	if err != nil {
		return nil, err
	}
	p.Start, p.Size = start*512, size*512
	p.DiskPath = filepath.Join(t.Dev, p.Disk)
	p.Path = filepath.Join(t.Dev, name)
	if b, err := os.ReadFile(filepath.Join(sysdir, "dev")); err == nil {
		p.devnum = strings.TrimSpace(string(b))
		p.MountPoint = mounts[p.devnum]
	}
	f, err := os.Open(p.DiskPath)
	if err != nil {
		return p, nil
	}
	defer f.Close()
	tab, ok := tables[p.Disk]
	if !ok {
		tab, _ = gpt.Read(f, 0)
		tables[p.Disk] = tab
	}
	if tab != nil {
		if gp, ok := tab.ByStart(uint64(p.Start)); ok {
			p.Type = gp.Type.String()
		}
	}
	head := make([]byte, 128<<10)
	n, _ := f.ReadAt(head, p.Start)
	p.FSType, p.UUID = probe(head[:n])
	return p, nil
}

// probe names the file system whose first 128 KiB are head.
func probe(head []byte) (fstype, uuid string) {
	has := func(off int, magic string) bool {
		return len(head) >= off+len(magic) && string(head[off:off+len(magic)]) == magic
	}
	switch {
	case has(0x438, "\x53\xef"):
		return "ext4", ""
	case has(0x10040, "_BHRfS_M"):
		return "btrfs", ""
	case has(0, "XFSB"):
		return "xfs", ""
	case has(0, "LUKS\xba\xbe"):
		return "crypto_LUKS", ""
	case has(0x218, "LVM2 001"):
		return "LVM2_member", ""
	case has(0xff6, "SWAPSPACE2"), has(0xff6, "SWAP-SPACE"):
		return "swap", ""
	}
	if len(head) >= 512 {
		if b, err := fat.ParseBootSector(head[:512]); err == nil {
			return "vfat", b.UUID()
		}
	}
	return "", ""
}

// mounts maps "major:minor" to the first mount point of that device.
func (t *Tool) mounts() map[string]string {
	out := map[string]string{}
	b, err := os.ReadFile(filepath.Join(t.Proc, "self/mountinfo"))
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		if _, ok := out[f[2]]; !ok {
			out[f[2]] = unescapeMount(f[4])
		}
	}
	return out
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// FindPartition resolves a device path given on the command line (after
// symlinks) to a known partition. A whole disk is refused.
func (t *Tool) FindPartition(arg string) (Partition, error) {
	if _, err := os.Stat(arg); err != nil {
		return Partition{}, &InputError{fmt.Sprintf("E: '%s' does not exist!", arg)}
	}
	real, err := filepath.EvalSymlinks(arg)
	if err != nil {
		return Partition{}, fmt.Errorf("resolve %s: %w", arg, err)
	}
	name := filepath.Base(real)
	if _, err := os.Stat(filepath.Join(t.Sys, "class/block", name, "partition")); err != nil {
		if _, err2 := os.Stat(filepath.Join(t.Sys, "class/block", name)); err2 == nil {
			return Partition{}, &InputError{fmt.Sprintf("E: cannot determine parent device of '%s' - please provide a partition, not a full disk.", arg)}
		}
		return Partition{}, &InputError{fmt.Sprintf("E: '%s' is not a block device known to the kernel (no %s/class/block/%s): give a partition such as /dev/sda2", arg, t.Sys, name)}
	}
	p, err := t.partition(name, map[string]*gpt.Table{}, t.mounts())
	if err != nil || p == nil {
		return Partition{}, &InputError{fmt.Sprintf("E: unable to get information about block device '%s'! (%v)", arg, err)}
	}
	return *p, nil
}

// FindUUID returns the partition holding the FAT file system with this
// volume ID (what /dev/disk/by-uuid/UUID would point at with udev).
func (t *Tool) FindUUID(uuid string, parts []Partition) (Partition, error) {
	for _, p := range parts {
		if p.FSType == "vfat" && strings.EqualFold(p.UUID, uuid) {
			return p, nil
		}
	}
	return Partition{}, fmt.Errorf("no partition with FAT volume ID %s: %w", uuid, os.ErrNotExist)
}

// InputError is a refusal of bad input; its message says what and how to
// fix it. It changes nothing.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

// IsInput tells whether err is a refusal of bad input.
func IsInput(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}
