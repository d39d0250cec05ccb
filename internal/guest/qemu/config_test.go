package qemu

import (
	"maps"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     map[string]string
		want    Spec
		wantErr map[string]string // field -> substring
	}{
		{name: "defaults", cfg: map[string]string{}, want: Spec{MemoryMiB: 512, Cores: 1, BIOS: "seabios", Boot: []string{"disk", "cdrom", "net"}, Merge: true}},
		{name: "ksm opt-out", cfg: map[string]string{"ksm": "0"}, want: Spec{MemoryMiB: 512, Cores: 1, BIOS: "seabios", Boot: []string{"disk", "cdrom", "net"}, Merge: false}},
		{name: "ksm opt-in", cfg: map[string]string{"ksm": "1"}, want: Spec{MemoryMiB: 512, Cores: 1, BIOS: "seabios", Boot: []string{"disk", "cdrom", "net"}, Merge: true}},
		{name: "bad ksm", cfg: map[string]string{"ksm": "maybe"}, wantErr: map[string]string{"ksm": "use 1 to allow merging this guest's memory or 0 to opt out"}},
		{name: "full", cfg: map[string]string{"memory": "1024", "cores": "2", "disk0": "size=8G", "disk1": "backing=/img/base.raw",
			"net0": "bridge=vmbr0,model=e1000,macaddr=52:54:00:AA:bb:cc", "boot": "order=net,disk", "bios": "ovmf",
			"kernel": "/k", "initrd": "/i", "append": "console=ttyS0"},
			want: Spec{MemoryMiB: 1024, Cores: 2, BIOS: "ovmf", Boot: []string{"net", "disk"},
				Disks:  []Disk{{Key: "disk0", Size: 8 << 30, Format: "qcow2"}, {Key: "disk1", Backing: "/img/base.raw", Format: "qcow2"}},
				NICs:   []NIC{{Key: "net0", Bridge: "vmbr0", Model: "e1000", MAC: "52:54:00:aa:bb:cc"}},
				Kernel: "/k", Initrd: "/i", Append: "console=ttyS0", Merge: true}},
		{name: "image", cfg: map[string]string{"disk0": "image=bookworm,size=20G"},
			want: Spec{MemoryMiB: 512, Cores: 1, BIOS: "seabios", Boot: []string{"disk", "cdrom", "net"},
				Disks: []Disk{{Key: "disk0", Image: "bookworm", Size: 20 << 30, Format: "qcow2"}}, Merge: true}},
		{name: "image and backing", cfg: map[string]string{"disk0": "image=bookworm,backing=/b.raw"}, wantErr: map[string]string{"disk0": "one of file=, backing= and image="}},
		{name: "bad image name", cfg: map[string]string{"disk0": "image=../x"}, wantErr: map[string]string{"disk0": "not an image name"}},
		{name: "image raw", cfg: map[string]string{"disk0": "image=bookworm,format=raw"}, wantErr: map[string]string{"disk0": "overlay disks are qcow2"}},
		{name: "bad mac", cfg: map[string]string{"net0": "bridge=vmbr0,macaddr=zz:54:00:aa:bb:cc"}, wantErr: map[string]string{"net0": "not a MAC"}},
		{name: "multicast mac", cfg: map[string]string{"net0": "bridge=vmbr0,macaddr=01:00:5e:00:00:01"}, wantErr: map[string]string{"net0": "multicast"}},
		{name: "no bridge", cfg: map[string]string{"net0": "model=e1000"}, wantErr: map[string]string{"net0": "bridge= is required"}},
		{name: "bad model", cfg: map[string]string{"net0": "bridge=b,model=rtl8139"}, wantErr: map[string]string{"net0": "virtio-net or e1000"}},
		{name: "bad size", cfg: map[string]string{"disk0": "size=8X"}, wantErr: map[string]string{"disk0": "not a size"}},
		{name: "disk nothing", cfg: map[string]string{"disk0": "format=qcow2"}, wantErr: map[string]string{"disk0": "needs size="}},
		{name: "relative file", cfg: map[string]string{"disk0": "file=disk.img"}, wantErr: map[string]string{"disk0": "absolute"}},
		{name: "memory", cfg: map[string]string{"memory": "lots"}, wantErr: map[string]string{"memory": "want a number"}},
		{name: "unknown", cfg: map[string]string{"colour": "blue"}, wantErr: map[string]string{"colour": "unknown VM option"}},
		{name: "boot", cfg: map[string]string{"boot": "order=floppy"}, wantErr: map[string]string{"boot": "floppy"}},
		{name: "initrd without kernel", cfg: map[string]string{"initrd": "/i"}, wantErr: map[string]string{"initrd": "needs kernel="}},
		{name: "bios", cfg: map[string]string{"bios": "coreboot"}, wantErr: map[string]string{"bios": "seabios or ovmf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ParseSpec(tc.cfg)
			if tc.wantErr != nil {
				for k, sub := range tc.wantErr {
					if !strings.Contains(errs[k], sub) {
						t.Errorf("error for %s = %q, want it to contain %q (all: %v)", k, errs[k], sub, errs)
					}
				}
				return
			}
			if errs != nil {
				t.Fatalf("unexpected errors %v", errs)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestArgs(t *testing.T) {
	d := New("/var/lib/berth/vms", nil)
	s, errs := ParseSpec(map[string]string{"memory": "256", "disk0": "size=1G", "net0": "bridge=br0", "boot": "order=net"})
	if errs != nil {
		t.Fatal(errs)
	}
	got := strings.Join(d.Args(100, s, false), " ")
	for _, want := range []string{"-machine q35,accel=tcg", "-m 256", "-daemonize", "-pidfile /var/lib/berth/vms/100/qemu.pid",
		"-drive file=/var/lib/berth/vms/100/disk0.qcow2,if=none,format=qcow2,id=disk0 -device virtio-blk-pci,drive=disk0 ",
		"tap,id=net0,ifname=tap100i0,script=no,downscript=no",
		"virtio-net-pci,netdev=net0,mac=" + DefaultMAC(100, 0) + ",bootindex=1",
		"-vnc unix:/var/lib/berth/vms/100/vnc.sock"} {
		if !strings.Contains(got, want) {
			t.Errorf("args %q lack %q", got, want)
		}
	}
	if DefaultMAC(100, 0) == DefaultMAC(101, 0) || DefaultMAC(100, 0) != DefaultMAC(100, 0) {
		t.Error("DefaultMAC is not stable and distinct")
	}
	if strings.Contains(strings.Join(d.Args(100, s, true), " "), "accel=tcg") {
		t.Error("kvm=true still selects TCG")
	}
	if !strings.Contains(got, "-machine mem-merge=on") {
		t.Errorf("args %q: a VM without ksm= is not mergeable", got)
	}
	s.Merge = false
	if got := strings.Join(d.Args(100, s, false), " "); !strings.Contains(got, "-machine mem-merge=off") || strings.Contains(got, "mem-merge=on") {
		t.Errorf("args %q: ksm=0 does not give mem-merge=off", got)
	}
}

// TestBootOrder checks that the boot order becomes bootindex properties
// (which SeaBIOS and OVMF both follow) and that a NIC keeps QEMU's
// default iPXE ROM only when the VM may boot from the network.
func TestBootOrder(t *testing.T) {
	d := New("/v", nil)
	base := map[string]string{"disk0": "size=1G", "disk1": "size=1G", "cdrom": "/iso/x.iso",
		"net0": "bridge=br0", "net1": "bridge=br0,model=e1000"}
	for _, tc := range []struct {
		boot string
		want []string
	}{
		{"", []string{"drive=disk0,bootindex=1 ", "drive=disk1,bootindex=2 ", "ide-cd,drive=cdrom,bootindex=3 ",
			"virtio-net-pci,netdev=net0,mac=" + DefaultMAC(1, 0) + ",bootindex=4 ", "e1000,netdev=net1,mac=" + DefaultMAC(1, 1) + ",bootindex=5 "}},
		{"order=net,disk", []string{"net0,mac=" + DefaultMAC(1, 0) + ",bootindex=1 ", "net1,mac=" + DefaultMAC(1, 1) + ",bootindex=2 ",
			"drive=disk0,bootindex=3 ", "drive=disk1,bootindex=4 ", "ide-cd,drive=cdrom "}},
		{"order=cdrom,disk", []string{"ide-cd,drive=cdrom,bootindex=1 ", "drive=disk0,bootindex=2 ", "drive=disk1,bootindex=3 ",
			"virtio-net-pci,netdev=net0,mac=" + DefaultMAC(1, 0) + ",romfile= ", "e1000,netdev=net1,mac=" + DefaultMAC(1, 1) + ",romfile= "}},
	} {
		t.Run(tc.boot, func(t *testing.T) {
			cfg := maps.Clone(base)
			if tc.boot != "" {
				cfg["boot"] = tc.boot
			}
			s, errs := ParseSpec(cfg)
			if errs != nil {
				t.Fatal(errs)
			}
			got := strings.Join(d.Args(1, s, false), " ") + " "
			for _, want := range tc.want {
				if !strings.Contains(got, want) {
					t.Errorf("args %q lack %q", got, want)
				}
			}
			if strings.Contains(got, "-boot ") {
				t.Errorf("args %q still give -boot (SeaBIOS only): bootindex orders both firmwares", got)
			}
		})
	}
	if _, errs := ParseSpec(map[string]string{"boot": "order=net"}); !strings.Contains(errs["boot"], "no NIC") {
		t.Errorf("order=net without a NIC: %v", errs)
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add("size=8G", "bridge=vmbr0,model=e1000,macaddr=52:54:00:aa:bb:cc", "order=disk,net")
	f.Add("backing=/a/b.raw,size=1G", "bridge=x", "cdrom")
	f.Add("file=/x.qcow2", "bridge=,macaddr=", "order=")
	f.Fuzz(func(t *testing.T, disk, nic, boot string) {
		s, errs := ParseSpec(map[string]string{"disk0": disk, "net0": nic, "boot": boot})
		if errs != nil {
			return
		}
		if len(s.Disks) != 1 || len(s.NICs) != 1 || len(s.Boot) == 0 {
			t.Fatalf("accepted spec is incomplete: %+v", s)
		}
		if s.NICs[0].Bridge == "" {
			t.Fatal("NIC without bridge accepted")
		}
		dk := s.Disks[0]
		if dk.File == "" && dk.Backing == "" && dk.Size <= 0 {
			t.Fatalf("disk without source accepted: %+v", dk)
		}
	})
}
