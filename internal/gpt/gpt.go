// Package gpt reads GUID partition tables (UEFI 2.x, chapter 5): the header
// at LBA 1 and its partition entry array, checking both CRC32s. It only
// reads; creating and changing tables is left to sgdisk.
package gpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// GUID is a GUID as stored on disk (the first three fields little-endian).
type GUID [16]byte

// String formats g in the usual lower-case 8-4-4-4-12 form.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

// IsZero tells whether g is all zeros (an unused partition entry).
func (g GUID) IsZero() bool { return g == GUID{} }

// ParseGUID parses the 8-4-4-4-12 text form (either case).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	var a uint32
	var b, c uint16
	var d, e []byte
	parts := strings.Split(s, "-")
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
		return g, fmt.Errorf("GUID %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	if _, err := fmt.Sscanf(parts[0]+" "+parts[1]+" "+parts[2]+" "+parts[3]+" "+parts[4], "%x %x %x %x %x", &a, &b, &c, &d, &e); err != nil {
		return g, fmt.Errorf("GUID %q: %w", s, err)
	}
	binary.LittleEndian.PutUint32(g[0:4], a)
	binary.LittleEndian.PutUint16(g[4:6], b)
	binary.LittleEndian.PutUint16(g[6:8], c)
	copy(g[8:10], d)
	copy(g[10:16], e)
	return g, nil
}

// Well-known partition type GUIDs.
var (
	TypeESP      = mustGUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	TypeBIOSBoot = mustGUID("21686148-6449-6e6f-744e-656564454649")
)

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// Partition is one used entry of the table.
type Partition struct {
	// Number is the 1-based entry index (the N of sgdisk -tN and sdaN).
	Number   int
	Type     GUID
	GUID     GUID
	FirstLBA uint64
	LastLBA  uint64
	Attrs    uint64
	Name     string
}

// Table is a parsed GPT.
type Table struct {
	SectorSize int
	DiskGUID   GUID
	Partitions []Partition
}

// ErrNoGPT means the disk has no valid GPT header at LBA 1.
var ErrNoGPT = errors.New("no GPT partition table")

// Read reads the primary GPT of the disk r with the given logical sector
// size (512 if 0).
func Read(r io.ReaderAt, sectorSize int) (*Table, error) {
	if sectorSize == 0 {
		sectorSize = 512
	}
	hdr := make([]byte, sectorSize)
	if _, err := r.ReadAt(hdr, int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("read GPT header: %w", err)
	}
	return parse(hdr, func(off int64, b []byte) error {
		_, err := r.ReadAt(b, off)
		return err
	})
}

// Parse is Read on a byte slice that holds the disk from LBA 0; it is what
// the fuzz test drives.
func Parse(disk []byte, sectorSize int) (*Table, error) {
	if len(disk) < 2*sectorSize {
		return nil, ErrNoGPT
	}
	return parse(disk[sectorSize:2*sectorSize], func(off int64, b []byte) error {
		if off < 0 || off+int64(len(b)) > int64(len(disk)) {
			return io.ErrUnexpectedEOF
		}
		copy(b, disk[off:])
		return nil
	})
}

func parse(hdr []byte, readAt func(int64, []byte) error) (*Table, error) {
	sectorSize := len(hdr)
	if string(hdr[0:8]) != "EFI PART" {
		return nil, ErrNoGPT
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:16])
	if hsize < 92 || int(hsize) > sectorSize {
		return nil, fmt.Errorf("GPT header size %d is invalid", hsize)
	}
	h := append([]byte(nil), hdr[:hsize]...)
	want := binary.LittleEndian.Uint32(h[16:20])
	binary.LittleEndian.PutUint32(h[16:20], 0)
	if crc32.ChecksumIEEE(h) != want {
		return nil, fmt.Errorf("GPT header CRC mismatch: the table is corrupt (check it with sgdisk -v)")
	}
	t := &Table{SectorSize: sectorSize}
	copy(t.DiskGUID[:], hdr[56:72])
	entLBA := binary.LittleEndian.Uint64(hdr[72:80])
	n := binary.LittleEndian.Uint32(hdr[80:84])
	esize := binary.LittleEndian.Uint32(hdr[84:88])
	if esize < 128 || esize > 4096 || esize%8 != 0 || n > 1024 {
		return nil, fmt.Errorf("GPT entry array (%d entries of %d bytes) is invalid", n, esize)
	}
	if entLBA > 1<<40 {
		return nil, fmt.Errorf("GPT entry array LBA %d is invalid", entLBA)
	}
	arr := make([]byte, int(n)*int(esize))
	if err := readAt(int64(entLBA)*int64(sectorSize), arr); err != nil {
		return nil, fmt.Errorf("read GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(arr) != binary.LittleEndian.Uint32(hdr[88:92]) {
		return nil, fmt.Errorf("GPT partition entry CRC mismatch: the table is corrupt (check it with sgdisk -v)")
	}
	for i := 0; i < int(n); i++ {
		e := arr[i*int(esize) : (i+1)*int(esize)]
		var p Partition
		copy(p.Type[:], e[0:16])
		if p.Type.IsZero() {
			continue
		}
		copy(p.GUID[:], e[16:32])
		p.Number = i + 1
		p.FirstLBA = binary.LittleEndian.Uint64(e[32:40])
		p.LastLBA = binary.LittleEndian.Uint64(e[40:48])
		p.Attrs = binary.LittleEndian.Uint64(e[48:56])
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		for j, c := range u {
			if c == 0 {
				u = u[:j]
				break
			}
		}
		p.Name = string(utf16.Decode(u))
		t.Partitions = append(t.Partitions, p)
	}
	return t, nil
}

// ByStart returns the partition that starts at the given byte offset.
func (t *Table) ByStart(offset uint64) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.FirstLBA*uint64(t.SectorSize) == offset {
			return p, true
		}
	}
	return Partition{}, false
}
