// Package efivars reads UEFI variables from an efivarfs directory
// (/sys/firmware/efi/efivars): the Secure Boot state, BootCurrent,
// BootOrder and the Boot#### load options efibootmgr lists. It takes the
// directory as a parameter so tests run on fixture trees. It does not
// write variables.
package efivars

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
)

// GlobalGUID is the EFI global variable vendor GUID.
const GlobalGUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// Info is what the firmware variables say about booting.
type Info struct {
	SecureBoot  bool
	SetupMode   bool
	BootCurrent int
	BootOrder   []int
	Entries     []BootEntry
}

// BootEntry is one Boot#### load option.
type BootEntry struct {
	Number      int
	Description string
	Active      bool
	// Path is the file path of the option's device path, if any
	// (\EFI\BOOT\BOOTX64.EFI).
	Path string
}

// read returns the data of a variable (without its 4 attribute bytes).
func read(dir, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, name+"-"+GlobalGUID))
	if err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("efivar %s: %d bytes, too short", name, len(b))
	}
	return b[4:], nil
}

// Read reads the boot variables in dir. Missing variables are left at
// their zero values; BootCurrent is -1 when unset.
func Read(dir string) (*Info, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("efivarfs: %w", err)
	}
	in := &Info{BootCurrent: -1}
	if b, err := read(dir, "SecureBoot"); err == nil && len(b) >= 1 {
		in.SecureBoot = b[0] == 1
	}
	if b, err := read(dir, "SetupMode"); err == nil && len(b) >= 1 {
		in.SetupMode = b[0] == 1
	}
	if b, err := read(dir, "BootCurrent"); err == nil && len(b) >= 2 {
		in.BootCurrent = int(binary.LittleEndian.Uint16(b))
	}
	if b, err := read(dir, "BootOrder"); err == nil {
		for i := 0; i+2 <= len(b); i += 2 {
			in.BootOrder = append(in.BootOrder, int(binary.LittleEndian.Uint16(b[i:])))
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), "-"+GlobalGUID)
		if !ok || len(name) != 8 || !strings.HasPrefix(name, "Boot") {
			continue
		}
		n, err := strconv.ParseUint(name[4:], 16, 16)
		if err != nil {
			continue
		}
		b, err := read(dir, name)
		if err != nil {
			continue
		}
		be, err := ParseLoadOption(b)
		if err != nil {
			continue
		}
		be.Number = int(n)
		in.Entries = append(in.Entries, be)
	}
	sort.Slice(in.Entries, func(i, j int) bool { return in.Entries[i].Number < in.Entries[j].Number })
	return in, nil
}

// ParseLoadOption parses an EFI_LOAD_OPTION (UEFI 2.x, 3.1.3).
func ParseLoadOption(b []byte) (BootEntry, error) {
	var e BootEntry
	if len(b) < 6 {
		return e, errors.New("load option too short")
	}
	e.Active = binary.LittleEndian.Uint32(b)&1 != 0
	plen := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[6:]
	var desc []uint16
	i := 0
	for ; i+2 <= len(rest); i += 2 {
		c := binary.LittleEndian.Uint16(rest[i:])
		if c == 0 {
			break
		}
		desc = append(desc, c)
	}
	if i+2 > len(rest) {
		return e, errors.New("load option description is not terminated")
	}
	e.Description = string(utf16.Decode(desc))
	rest = rest[i+2:]
	if plen > len(rest) {
		return e, errors.New("load option device path is truncated")
	}
	e.Path = filePath(rest[:plen])
	return e, nil
}

// filePath returns the first media file path node of a device path.
func filePath(dp []byte) string {
	for len(dp) >= 4 {
		typ, sub := dp[0], dp[1]
		l := int(binary.LittleEndian.Uint16(dp[2:]))
		if l < 4 || l > len(dp) || typ == 0x7f {
			return ""
		}
		if typ == 4 && sub == 4 {
			var u []uint16
			for i := 4; i+2 <= l; i += 2 {
				c := binary.LittleEndian.Uint16(dp[i:])
				if c == 0 {
					break
				}
				u = append(u, c)
			}
			return string(utf16.Decode(u))
		}
		dp = dp[l:]
	}
	return ""
}
