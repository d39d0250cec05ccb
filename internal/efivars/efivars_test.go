package efivars

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"

	"github.com/google/go-cmp/cmp"
)

// loadOption builds an EFI_LOAD_OPTION with a hard-drive node and a file
// path node, as firmware and efibootmgr write them.
func loadOption(active bool, desc, path string) []byte {
	var b []byte
	attr := uint32(0)
	if active {
		attr = 1
	}
	b = binary.LittleEndian.AppendUint32(b, attr)
	var dp []byte
	hd := make([]byte, 42)
	hd[0], hd[1] = 4, 1 // media, hard drive
	binary.LittleEndian.PutUint16(hd[2:], 42)
	dp = append(dp, hd...)
	u := utf16.Encode([]rune(path + "\x00"))
	fp := []byte{4, 4, 0, 0}
	binary.LittleEndian.PutUint16(fp[2:], uint16(4+2*len(u)))
	for _, c := range u {
		fp = binary.LittleEndian.AppendUint16(fp, c)
	}
	dp = append(dp, fp...)
	dp = append(dp, 0x7f, 0xff, 4, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(dp)))
	for _, c := range utf16.Encode([]rune(desc + "\x00")) {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return append(b, dp...)
}

func putVar(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name+"-"+GlobalGUID), append([]byte{7, 0, 0, 0}, data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	putVar(t, dir, "SecureBoot", []byte{1})
	putVar(t, dir, "SetupMode", []byte{0})
	putVar(t, dir, "BootCurrent", []byte{2, 0})
	putVar(t, dir, "BootOrder", []byte{2, 0, 0, 0, 0x0a, 0})
	putVar(t, dir, "Boot0000", loadOption(true, "UEFI Misc Device", `\EFI\BOOT\BOOTX64.EFI`))
	putVar(t, dir, "Boot0002", loadOption(true, "Linux Boot Manager", `\EFI\systemd\systemd-bootx64.efi`))
	putVar(t, dir, "Boot000A", loadOption(false, "proxmox", `\EFI\proxmox\grubx64.efi`))
	putVar(t, dir, "Boot0003", []byte{1, 0}) // truncated: skipped
	os.WriteFile(filepath.Join(dir, "Boot0004-00000000-0000-0000-0000-000000000000"), []byte{7, 0, 0, 0}, 0o644)
	in, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &Info{SecureBoot: true, BootCurrent: 2, BootOrder: []int{2, 0, 10}, Entries: []BootEntry{
		{0, "UEFI Misc Device", true, `\EFI\BOOT\BOOTX64.EFI`},
		{2, "Linux Boot Manager", true, `\EFI\systemd\systemd-bootx64.efi`},
		{10, "proxmox", false, `\EFI\proxmox\grubx64.efi`},
	}}
	if diff := cmp.Diff(in, want); diff != "" {
		t.Errorf("Read mismatch (-got +want):\n%s", diff)
	}
	if _, err := Read(filepath.Join(dir, "missing")); err == nil {
		t.Error("Read of a missing efivarfs succeeded")
	}
	empty, err := Read(t.TempDir())
	if err != nil || empty.SecureBoot || empty.BootCurrent != -1 {
		t.Errorf("empty efivarfs: %+v %v", empty, err)
	}
}

func FuzzParseLoadOption(f *testing.F) {
	f.Add(loadOption(true, "Linux Boot Manager", `\EFI\systemd\systemd-bootx64.efi`))
	f.Add([]byte{1, 0, 0, 0, 0xff, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseLoadOption(b)
	})
}
