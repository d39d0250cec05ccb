package fat

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("BERTH_TEST_ROOT") == "1" {
				t.Fatalf("%s not found: make test installs deps/boot.debs", tool)
			}
			t.Skipf("%s not found (install deps/boot.debs)", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// TestReadMkfsImages makes FAT12, FAT16 and FAT32 images with mkfs.fat,
// fills them with mtools (long and short names, nested and large
// directories, multi-cluster files) and reads everything back.
func TestReadMkfsImages(t *testing.T) {
	need(t, "mkfs.fat", "mcopy", "mmd")
	for _, tt := range []struct {
		bits, mib int
	}{{12, 4}, {16, 32}, {32, 64}} {
		t.Run(fmt.Sprintf("FAT%d", tt.bits), func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "fat.img")
			run(t, "truncate", "-s", fmt.Sprintf("%dM", tt.mib), img)
			run(t, "mkfs.fat", "-F", fmt.Sprint(tt.bits), "-i", "12ab34cd", "-n", "BERTHTEST", img)
			src := filepath.Join(dir, "src")
			want := map[string]string{
				"EFI/BOOT/BOOTX64.EFI":                              strings.Repeat("boot", 3000),
				"EFI/proxmox/6.1.0-10-amd64/vmlinuz-6.1.0-10-amd64": strings.Repeat("kernel-data-", 40000),
				"loader/entries/proxmox-6.1.0-10-amd64.conf":        "title x\n",
				"loader/loader.conf":                                "timeout 3\n",
				"README":                                            "short",
				"empty":                                             "",
				"a name with spaces and ünïcode.txt":                "unicode",
			}
			for i := 0; i < 70; i++ { // more entries than one cluster holds
				want[fmt.Sprintf("many/file-with-a-long-name-%03d.conf", i)] = fmt.Sprint(i)
			}
			for p, c := range want {
				full := filepath.Join(src, p)
				os.MkdirAll(filepath.Dir(full), 0o755)
				os.WriteFile(full, []byte(c), 0o644)
			}
			ents, _ := os.ReadDir(src)
			args := []string{"-s", "-i", img}
			for _, e := range ents {
				args = append(args, filepath.Join(src, e.Name()))
			}
			run(t, "mcopy", append(args, "::/")...)

			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fsys, err := Open(f, 0)
			if err != nil {
				t.Fatal(err)
			}
			if fsys.Type != tt.bits || fsys.UUID() != "12AB-34CD" || fsys.Label != "BERTHTEST" {
				t.Errorf("boot sector: type %d uuid %s label %q", fsys.Type, fsys.UUID(), fsys.Label)
			}
			for p, c := range want {
				got, err := fsys.ReadFile(p)
				if err != nil {
					t.Errorf("ReadFile(%s): %v", p, err)
					continue
				}
				if string(got) != c {
					t.Errorf("ReadFile(%s): %d bytes, want %d", p, len(got), len(c))
				}
			}
			// Case-insensitive lookup, as FAT is.
			if _, err := fsys.Stat("efi/boot/bootx64.efi"); err != nil {
				t.Errorf("case-insensitive Stat: %v", err)
			}
			root, err := fsys.ReadDir("")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range root {
				names = append(names, e.Name)
			}
			sort.Strings(names)
			if diff := cmp.Diff(names, []string{"EFI", "README", "a name with spaces and ünïcode.txt", "empty", "loader", "many"}); diff != "" {
				t.Errorf("root mismatch (-got +want):\n%s", diff)
			}
			if many, _ := fsys.ReadDir("many"); len(many) != 70 {
				t.Errorf("many/ has %d entries, want 70", len(many))
			}
			if _, err := fsys.Stat("nope/x"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat of a missing path: %v", err)
			}
		})
	}
}

func TestParseBootSectorRejects(t *testing.T) {
	for name, s := range map[string][]byte{
		"short":        make([]byte, 100),
		"no signature": make([]byte, 512),
		"zero geometry": func() []byte {
			b := make([]byte, 512)
			b[0], b[510], b[511] = 0xEB, 0x55, 0xAA
			return b
		}(),
	} {
		if _, err := ParseBootSector(s); !errors.Is(err, ErrNotFAT) {
			t.Errorf("%s: err = %v, want ErrNotFAT", name, err)
		}
	}
}

// FuzzOpen feeds arbitrary images to the reader: it must never panic or
// loop, whatever the boot sector, FAT and directories say.
func FuzzOpen(f *testing.F) {
	for _, seed := range seedImages(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		fsys, err := Open(bytes.NewReader(img), 0)
		if err != nil {
			return
		}
		var walk func(dir string, depth int)
		walk = func(dir string, depth int) {
			if depth > 8 {
				return
			}
			ents, err := fsys.ReadDir(dir)
			if err != nil {
				return
			}
			for _, e := range ents {
				p := dir + "/" + e.Name
				if e.IsDir {
					walk(p, depth+1)
				} else {
					fsys.ReadFile(p)
				}
			}
		}
		walk("", 0)
	})
}

// seedImages returns the committed seed images (small FAT12 images made
// with mkfs.fat and mtools, stored compressed to their used sectors).
func seedImages(f *testing.F) [][]byte {
	m, _ := filepath.Glob("testdata/*.img")
	var out [][]byte
	for _, p := range m {
		b, err := os.ReadFile(p)
		if err == nil {
			out = append(out, b)
		}
	}
	return out
}
