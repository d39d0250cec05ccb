package esp

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEntryRoundTrip(t *testing.T) {
	s := EntryConf("Proxmox Virtual Environment", "6.5.11-4-pve", "root=ZFS=rpool/ROOT/pve-1 boot=zfs console=ttyS0")
	// proxmox-boot-tool writes 232 bytes for a 12-character version with
	// this command line (observed).
	if len(s) != 232 {
		t.Errorf("entry is %d bytes, want 232:\n%s", len(s), s)
	}
	want := Entry{Title: "Proxmox Virtual Environment", Version: "6.5.11-4-pve", Options: "root=ZFS=rpool/ROOT/pve-1 boot=zfs console=ttyS0",
		Linux: "/EFI/proxmox/6.5.11-4-pve/vmlinuz-6.5.11-4-pve", Initrd: []string{"/EFI/proxmox/6.5.11-4-pve/initrd.img-6.5.11-4-pve"}}
	if diff := cmp.Diff(ParseEntry(s), want); diff != "" {
		t.Errorf("ParseEntry mismatch (-got +want):\n%s", diff)
	}
}

func TestLoaderConf(t *testing.T) {
	for _, tt := range []struct{ old, def, want string }{
		{"", "proxmox-*", "timeout 3\ndefault proxmox-*\n"},
		{"timeout 3\ndefault proxmox-*\n", "proxmox-6.1.conf", "timeout 3\ndefault proxmox-6.1.conf\n"},
		{"timeout 5\neditor no", "proxmox-*", "timeout 5\neditor no\ndefault proxmox-*\n"},
		{"default a\ntimeout 3\ndefault b\n", "proxmox-x.conf", "default proxmox-x.conf\ntimeout 3\ndefault proxmox-x.conf\n"},
	} {
		if got := LoaderConf(tt.old, tt.def); got != tt.want {
			t.Errorf("LoaderConf(%q, %q) = %q, want %q", tt.old, tt.def, got, tt.want)
		}
	}
}

// FuzzParseEntry: entries read back from an ESP are outside input.
func FuzzParseEntry(f *testing.F) {
	f.Add(EntryConf("t", "6.1.0-9-amd64", "root=/dev/sda3"))
	f.Add("# comment\ninitrd a\ninitrd b\nlinux\n")
	f.Fuzz(func(t *testing.T, s string) {
		e := ParseEntry(s)
		if e.Linux != "" && !strings.Contains(s, e.Linux) {
			t.Fatalf("linux %q not from the input", e.Linux)
		}
	})
}
