package uml

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// COW file header constants from the kernel's arch/um/drivers/cow_user.c.
const (
	cowMagic      = 0x4f4f4f4d // "OOOM"
	cowPathLenV3  = 4096
	cowHeaderV3   = 4 + 4 + 4 + 8 + 4 + 4 + 4 + cowPathLenV3
	cowPathLenV12 = 256
)

// COWHeader is what a UML COW file records about its base image.
type COWHeader struct {
	Version int
	// Backing is the base image's path as given when the COW was made.
	Backing string
	// MTime and Size are the base's when the COW was made: if the base
	// changes, the COW file no longer matches it.
	MTime int64
	Size  int64
}

// ParseCOWHeader decodes the header of a COW file (version 3, as current
// kernels write; versions 1 and 2 are recognised but not supported).
func ParseCOWHeader(b []byte) (COWHeader, error) {
	if len(b) < 8 {
		return COWHeader{}, errors.New("COW header too short")
	}
	magic := binary.BigEndian.Uint32(b[0:])
	if magic != cowMagic {
		return COWHeader{}, fmt.Errorf("not a UML COW file (magic %#x)", magic)
	}
	v := int(binary.BigEndian.Uint32(b[4:]))
	if v != 3 {
		return COWHeader{}, fmt.Errorf("COW file version %d is not supported (berth reads version 3)", v)
	}
	if len(b) < cowHeaderV3 {
		return COWHeader{}, fmt.Errorf("COW header of %d bytes is short of %d", len(b), cowHeaderV3)
	}
	h := COWHeader{Version: v, MTime: int64(binary.BigEndian.Uint32(b[8:])), Size: int64(binary.BigEndian.Uint64(b[12:]))}
	path := b[32 : 32+cowPathLenV3]
	for i, c := range path {
		if c == 0 {
			path = path[:i]
			break
		}
	}
	h.Backing = string(path)
	if h.Backing == "" {
		return COWHeader{}, errors.New("COW header names no backing file")
	}
	return h, nil
}

// ReadCOWHeader reads the header of the COW file at path.
func ReadCOWHeader(path string) (COWHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return COWHeader{}, err
	}
	defer f.Close()
	b := make([]byte, cowHeaderV3)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return COWHeader{}, fmt.Errorf("read COW header of %s: %w", path, err)
	}
	h, err := ParseCOWHeader(b[:n])
	if err != nil {
		return COWHeader{}, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// CheckBase compares a COW header with its base image as it is now and
// explains a mismatch: UML refuses a COW file whose base changed.
func CheckBase(h COWHeader, base string) error {
	st, err := os.Stat(base)
	if err != nil {
		return fmt.Errorf("base image of the COW file: %w", err)
	}
	if st.ModTime().Unix() != h.MTime || st.Size() != h.Size {
		return fmt.Errorf("base image %s changed after the COW file was made (mtime %d, size %d; the COW file expects mtime %d, size %d): "+
			"the COW file no longer matches it. Restore the base image (and its mtime), or destroy and recreate the guest; keep base images read-only",
			base, st.ModTime().Unix(), st.Size(), h.MTime, h.Size)
	}
	return nil
}
