package gpt

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestReadSgdisk reads a table written by sgdisk and compares it with
// what sgdisk itself reports.
func TestReadSgdisk(t *testing.T) {
	if _, err := exec.LookPath("sgdisk"); err != nil {
		if os.Getenv("BERTH_TEST_ROOT") == "1" {
			t.Fatal("sgdisk not found: make test installs deps/boot.debs")
		}
		t.Skip("sgdisk not found (install gdisk)")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 64<<20)
	out, err := exec.Command("sgdisk", "-o", "-n1:0:+1M", "-t1:EF02", "-c1:bios boot", "-n2:0:+32M", "-t2:EF00", "-c2:EFI system", "-n3:0:0", "-t3:8300", "-U", "11111111-2222-3333-4444-555555555555", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Read(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	if tab.DiskGUID.String() != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("disk GUID %s", tab.DiskGUID)
	}
	type row struct {
		N           int
		Type, Name  string
		First, Last uint64
	}
	var got []row
	for _, p := range tab.Partitions {
		got = append(got, row{p.Number, p.Type.String(), p.Name, p.FirstLBA, p.LastLBA})
	}
	want := []row{
		{1, TypeBIOSBoot.String(), "bios boot", 2048, 4095},
		{2, TypeESP.String(), "EFI system", 4096, 69631},
		{3, "0fc63daf-8483-4772-8e79-3d69d8477de4", "", 69632, 131038},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("partitions mismatch (-got +want):\n%s", diff)
	}
	// sgdisk -i agrees on the unique GUID.
	info, _ := exec.Command("sgdisk", "-i2", img).Output()
	if !strings.Contains(strings.ToLower(string(info)), tab.Partitions[1].GUID.String()) {
		t.Errorf("partition 2 GUID %s not in sgdisk -i2:\n%s", tab.Partitions[1].GUID, info)
	}
	if p, ok := tab.ByStart(4096 * 512); !ok || p.Number != 2 {
		t.Errorf("ByStart: %+v %v", p, ok)
	}

	// A damaged entry array is refused by its CRC.
	raw, _ := os.ReadFile(img)
	raw[2*512+60] ^= 0xff
	if _, err := Parse(raw, 512); err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Errorf("corrupt entries: err = %v", err)
	}
	if _, err := Parse(make([]byte, 4096), 512); err != ErrNoGPT {
		t.Errorf("blank disk: err = %v, want ErrNoGPT", err)
	}
}

func TestParseGUID(t *testing.T) {
	for _, s := range []string{"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "21686148-6449-6E6F-744E-656564454649"} {
		g, err := ParseGUID(s)
		if err != nil || g.String() != strings.ToLower(s) {
			t.Errorf("ParseGUID(%s) = %s, %v", s, g, err)
		}
	}
	for _, s := range []string{"", "c12a7328f81f11d2ba4b00a0c93ec93b", "zzzzzzzz-f81f-11d2-ba4b-00a0c93ec93b"} {
		if _, err := ParseGUID(s); err == nil {
			t.Errorf("ParseGUID(%q) accepted", s)
		}
	}
}

// FuzzParse: arbitrary disks never panic the parser.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/gpt-head.bin"); err == nil {
		f.Add(b)
	}
	f.Add(make([]byte, 2048))
	f.Fuzz(func(t *testing.T, disk []byte) {
		tab, err := Parse(disk, 512)
		if err == nil && tab.SectorSize != 512 {
			t.Fatal("sector size lost")
		}
	})
}
