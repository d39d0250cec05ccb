// Package fat reads FAT12, FAT16 and FAT32 file systems from userspace:
// the boot sector (volume ID, geometry), directories with long file names,
// and file contents by following cluster chains. It is how berth inspects
// EFI system partitions on hosts without a vfat driver. It does not write;
// berth writes ESPs with mtools and formats them with mkfs.fat.
package fat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
	"unicode/utf16"
)

// Types of FAT, by cluster count as the specification defines them.
const (
	FAT12 = 12
	FAT16 = 16
	FAT32 = 32
)

// BootSector is what the boot sector (BPB) says about the file system.
type BootSector struct {
	BytesPerSector    int
	SectorsPerCluster int
	ReservedSectors   int
	NumFATs           int
	RootEntries       int
	TotalSectors      uint32
	FATSectors        uint32
	RootCluster       uint32
	// VolumeID is the serial number blkid shows as the UUID (XXXX-XXXX).
	VolumeID uint32
	Label    string
	// Type is FAT12, FAT16 or FAT32.
	Type     int
	Clusters uint32
}

// UUID formats the volume ID the way blkid and /dev/disk/by-uuid do.
func (b BootSector) UUID() string {
	return fmt.Sprintf("%04X-%04X", b.VolumeID>>16, b.VolumeID&0xffff)
}

// ErrNotFAT means the sector does not hold a FAT boot sector.
var ErrNotFAT = errors.New("not a FAT file system")

// ParseBootSector parses the first sector of a FAT file system.
func ParseBootSector(s []byte) (BootSector, error) {
	var b BootSector
	if len(s) < 512 || s[510] != 0x55 || s[511] != 0xAA {
		return b, ErrNotFAT
	}
	if s[0] != 0xEB && s[0] != 0xE9 {
		return b, ErrNotFAT
	}
	b.BytesPerSector = int(binary.LittleEndian.Uint16(s[11:13]))
	b.SectorsPerCluster = int(s[13])
	b.ReservedSectors = int(binary.LittleEndian.Uint16(s[14:16]))
	b.NumFATs = int(s[16])
	b.RootEntries = int(binary.LittleEndian.Uint16(s[17:19]))
	b.TotalSectors = uint32(binary.LittleEndian.Uint16(s[19:21]))
	if b.TotalSectors == 0 {
		b.TotalSectors = binary.LittleEndian.Uint32(s[32:36])
	}
	b.FATSectors = uint32(binary.LittleEndian.Uint16(s[22:24]))
	fat32 := b.FATSectors == 0
	if fat32 {
		b.FATSectors = binary.LittleEndian.Uint32(s[36:40])
		b.RootCluster = binary.LittleEndian.Uint32(s[44:48])
	}
	switch b.BytesPerSector {
	case 512, 1024, 2048, 4096:
	default:
		return b, ErrNotFAT
	}
	if b.SectorsPerCluster == 0 || b.SectorsPerCluster&(b.SectorsPerCluster-1) != 0 || b.ReservedSectors == 0 || b.NumFATs == 0 || b.FATSectors == 0 {
		return b, ErrNotFAT
	}
	rootSectors := uint32((b.RootEntries*32 + b.BytesPerSector - 1) / b.BytesPerSector)
	meta := uint64(b.ReservedSectors) + uint64(b.NumFATs)*uint64(b.FATSectors) + uint64(rootSectors)
	if meta >= uint64(b.TotalSectors) {
		return b, ErrNotFAT
	}
	b.Clusters = uint32((uint64(b.TotalSectors) - meta) / uint64(b.SectorsPerCluster))
	switch {
	case b.Clusters < 4085:
		b.Type = FAT12
	case b.Clusters < 65525:
		b.Type = FAT16
	default:
		b.Type = FAT32
	}
	if (b.Type == FAT32) != fat32 {
		return b, fmt.Errorf("%w: FAT size fields contradict the cluster count", ErrNotFAT)
	}
	ext := 36
	if fat32 {
		ext = 64
	}
	if s[ext+2] == 0x29 {
		b.VolumeID = binary.LittleEndian.Uint32(s[ext+3 : ext+7])
		b.Label = strings.TrimRight(string(s[ext+7:ext+18]), " ")
	}
	return b, nil
}

// FS is an open FAT file system inside r starting at byte offset off.
type FS struct {
	BootSector
	r        io.ReaderAt
	off      int64
	fat      []byte
	dataOff  int64
	rootOff  int64
	clusterB int
}

// Open reads the boot sector and the first FAT of the file system at
// offset off of r.
func Open(r io.ReaderAt, off int64) (*FS, error) {
	s := make([]byte, 512)
	if _, err := r.ReadAt(s, off); err != nil {
		return nil, fmt.Errorf("read FAT boot sector: %w", err)
	}
	b, err := ParseBootSector(s)
	if err != nil {
		return nil, err
	}
	f := &FS{BootSector: b, r: r, off: off}
	bps := int64(b.BytesPerSector)
	fatLen := int64(b.FATSectors) * bps
	if fatLen > 64<<20 {
		return nil, fmt.Errorf("%w: FAT of %d bytes is implausibly large", ErrNotFAT, fatLen)
	}
	f.fat = make([]byte, fatLen)
	if _, err := r.ReadAt(f.fat, off+int64(b.ReservedSectors)*bps); err != nil {
		return nil, fmt.Errorf("read FAT: %w", err)
	}
	f.rootOff = off + (int64(b.ReservedSectors)+int64(b.NumFATs)*int64(b.FATSectors))*bps
	f.dataOff = f.rootOff + int64((b.RootEntries*32+b.BytesPerSector-1)/b.BytesPerSector)*bps
	f.clusterB = b.SectorsPerCluster * b.BytesPerSector
	return f, nil
}

// next returns the FAT entry of cluster c.
func (f *FS) next(c uint32) uint32 {
	switch f.Type {
	case FAT12:
		i := int(c) + int(c)/2
		if i+1 >= len(f.fat) {
			return 0x0FFFFFFF
		}
		v := uint32(binary.LittleEndian.Uint16(f.fat[i:]))
		if c&1 == 1 {
			v >>= 4
		} else {
			v &= 0xfff
		}
		if v >= 0xff8 {
			return 0x0FFFFFFF
		}
		return v
	case FAT16:
		i := int(c) * 2
		if i+2 > len(f.fat) {
			return 0x0FFFFFFF
		}
		v := uint32(binary.LittleEndian.Uint16(f.fat[i:]))
		if v >= 0xfff8 {
			return 0x0FFFFFFF
		}
		return v
	default:
		i := int(c) * 4
		if i+4 > len(f.fat) {
			return 0x0FFFFFFF
		}
		return binary.LittleEndian.Uint32(f.fat[i:]) & 0x0FFFFFFF
	}
}

// chain calls fn with each cluster of the chain starting at c, at most max
// clusters (0: no limit but the cluster count).
func (f *FS) chain(c uint32, fn func(c uint32) error) error {
	for n := uint32(0); ; n++ {
		if c < 2 || c >= f.Clusters+2 {
			return fmt.Errorf("cluster chain points at invalid cluster %d: the file system is damaged (fsck.fat)", c)
		}
		if n > f.Clusters {
			return errors.New("cluster chain loops: the file system is damaged (fsck.fat)")
		}
		if err := fn(c); err != nil {
			return err
		}
		c = f.next(c)
		if c >= 0x0FFFFFF8 {
			return nil
		}
	}
}

func (f *FS) clusterOff(c uint32) int64 { return f.dataOff + int64(c-2)*int64(f.clusterB) }

// Entry is one directory entry.
type Entry struct {
	Name    string
	IsDir   bool
	Size    uint32
	Cluster uint32
	// ModTime is the modification time (2 s resolution, local time as
	// FAT stores it; zero if unset).
	ModTime time.Time
}

// dosTime decodes FAT's date and time fields in the local time zone.
func dosTime(d, t uint16) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return time.Date(1980+int(d>>9), time.Month(d>>5&0xf), int(d&0x1f), int(t>>11), int(t>>5&0x3f), int(t&0x1f)*2, 0, time.Local)
}

var errStop = errors.New("stop")

func (f *FS) dirBytes(cluster uint32) ([]byte, error) {
	if cluster == 0 {
		if f.Type == FAT32 {
			cluster = f.RootCluster
		} else {
			b := make([]byte, f.RootEntries*32)
			_, err := f.r.ReadAt(b, f.rootOff)
			return b, err
		}
	}
	var out []byte
	buf := make([]byte, f.clusterB)
	err := f.chain(cluster, func(c uint32) error {
		if len(out) > 1<<22 {
			return errors.New("directory larger than 4 MiB: the file system is damaged")
		}
		if _, err := f.r.ReadAt(buf, f.clusterOff(c)); err != nil {
			return err
		}
		out = append(out, buf...)
		return nil
	})
	return out, err
}

// parseDir decodes the entries of a directory's bytes, skipping deleted
// entries, volume labels and the dot entries.
func parseDir(b []byte) []Entry {
	var out []Entry
	var lfn []uint16
	var lfnSum byte = 0
	for i := 0; i+32 <= len(b); i += 32 {
		e := b[i : i+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 {
			lfn = nil
			continue
		}
		attr := e[11]
		if attr&0x3F == 0x0F {
			seq := e[0] & 0x1F
			if e[0]&0x40 != 0 {
				lfn = make([]uint16, 13*int(seq))
				lfnSum = e[13]
			}
			if lfn == nil || seq == 0 || int(seq)*13 > len(lfn) || e[13] != lfnSum {
				lfn = nil
				continue
			}
			pos := (int(seq) - 1) * 13
			for k, o := range []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
				lfn[pos+k] = binary.LittleEndian.Uint16(e[o:])
			}
			continue
		}
		if attr&0x08 != 0 {
			lfn = nil
			continue
		}
		name := shortName(e)
		if lfn != nil && checksum(e[:11]) == lfnSum {
			u := lfn
			for j, c := range u {
				if c == 0 || c == 0xFFFF {
					u = u[:j]
					break
				}
			}
			name = string(utf16.Decode(u))
		}
		lfn = nil
		if name == "." || name == ".." {
			continue
		}
		cl := uint32(binary.LittleEndian.Uint16(e[26:28])) | uint32(binary.LittleEndian.Uint16(e[20:22]))<<16
		out = append(out, Entry{Name: name, IsDir: attr&0x10 != 0, Size: binary.LittleEndian.Uint32(e[28:32]), Cluster: cl,
			ModTime: dosTime(binary.LittleEndian.Uint16(e[24:26]), binary.LittleEndian.Uint16(e[22:24]))})
	}
	return out
}

func checksum(n []byte) byte {
	var s byte
	for _, c := range n {
		s = (s>>1 | s<<7) + c
	}
	return s
}

func shortName(e []byte) string {
	base := []byte(strings.TrimRight(string(e[0:8]), " "))
	if len(base) > 0 && base[0] == 0x05 {
		base[0] = 0xE5
	}
	ext := strings.TrimRight(string(e[8:11]), " ")
	// NT reserved byte 12: bit 3 lower-case base, bit 4 lower-case extension.
	b := string(base)
	if e[12]&0x08 != 0 {
		b = strings.ToLower(b)
	}
	if e[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext == "" {
		return b
	}
	return b + "." + ext
}

func split(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

// Stat returns the entry at the slash-separated path (case-insensitive, as
// FAT is). The root is a directory entry with cluster 0.
func (f *FS) Stat(p string) (Entry, error) {
	cur := Entry{Name: "/", IsDir: true}
	for _, part := range split(p) {
		if !cur.IsDir {
			return Entry{}, &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
		}
		b, err := f.dirBytes(cur.Cluster)
		if err != nil {
			return Entry{}, fmt.Errorf("read directory of %s: %w", p, err)
		}
		found := false
		for _, e := range parseDir(b) {
			if strings.EqualFold(e.Name, part) {
				cur, found = e, true
				break
			}
		}
		if !found {
			return Entry{}, &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
		}
	}
	return cur, nil
}

// ReadDir lists the directory at p.
func (f *FS) ReadDir(p string) ([]Entry, error) {
	d, err := f.Stat(p)
	if err != nil {
		return nil, err
	}
	if !d.IsDir {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: errors.New("not a directory")}
	}
	b, err := f.dirBytes(d.Cluster)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", p, err)
	}
	return parseDir(b), nil
}

// WalkFile calls fn with the contents of the file at p, one cluster at a
// time (the last one cut to the file size). It fails if the cluster chain is
// shorter than the size says.
func (f *FS) WalkFile(p string, fn func([]byte) error) error {
	e, err := f.Stat(p)
	if err != nil {
		return err
	}
	if e.IsDir {
		return &fs.PathError{Op: "read", Path: p, Err: errors.New("is a directory")}
	}
	left := int64(e.Size)
	if left == 0 {
		return nil
	}
	// Contiguous clusters are read together, up to 1 MiB at a time.
	maxRun := uint32(1<<20) / uint32(f.clusterB)
	if maxRun == 0 {
		maxRun = 1
	}
	buf := make([]byte, int(maxRun)*f.clusterB)
	var runStart, runLen uint32
	flush := func() error {
		if runLen == 0 || left <= 0 {
			return nil
		}
		n := int64(runLen) * int64(f.clusterB)
		if left < n {
			n = left
		}
		if _, err := f.r.ReadAt(buf[:n], f.clusterOff(runStart)); err != nil {
			return err
		}
		left -= n
		runLen = 0
		return fn(buf[:n])
	}
	need := uint32((left + int64(f.clusterB) - 1) / int64(f.clusterB))
	var seen uint32
	err = f.chain(e.Cluster, func(c uint32) error {
		if seen == need {
			return errStop
		}
		seen++
		if runLen > 0 && c == runStart+runLen && runLen < maxRun {
			runLen++
			return nil
		}
		if err := flush(); err != nil {
			return err
		}
		runStart, runLen = c, 1
		return nil
	})
	if err == nil || errors.Is(err, errStop) {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if left > 0 {
		return fmt.Errorf("read %s: cluster chain ends %d bytes before the file size: the file system is damaged (fsck.fat)", p, left)
	}
	return nil
}

// ReadFile returns the contents of the file at p.
func (f *FS) ReadFile(p string) ([]byte, error) {
	var out []byte
	err := f.WalkFile(p, func(b []byte) error {
		out = append(out, b...)
		return nil
	})
	return out, err
}
