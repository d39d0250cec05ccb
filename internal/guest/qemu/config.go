package qemu

import (
	"crypto/sha256"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/tap"
)

// MaxDisks and MaxNICs bound the diskN and netN options.
const (
	MaxDisks = 8
	MaxNICs  = 8
)

// Disk is one diskN option: "size=8G", "file=PATH[,format=raw|qcow2]",
// "backing=PATH[,size=…]" (a qcow2 overlay on a read-only base) or
// "image=NAME[,size=…]" (a qcow2 overlay on the bootable disk of an image
// in berth's image store).
type Disk struct {
	Key     string
	Size    int64 // bytes; 0 for file= disks
	File    string
	Backing string
	// Image names an image in the store; the driver resolves it to
	// Backing (the image's disk.qcow2 or disk.raw) before use.
	Image  string
	Format string
}

// NIC is one netN option: "bridge=BR[,model=virtio-net|e1000][,macaddr=MAC]".
type NIC struct {
	Key    string
	Index  int
	Bridge string
	Model  string
	MAC    string
}

// Spec is a VM's parsed configuration.
type Spec struct {
	MemoryMiB int
	Cores     int
	Disks     []Disk
	NICs      []NIC
	CDROM     string
	Boot      []string // disk, net, cdrom
	BIOS      string   // seabios or ovmf
	Kernel    string
	Initrd    string
	Append    string
	// Merge is false when the VM opts out of KSM (ksm=0): QEMU then
	// does not mark its RAM mergeable (-machine mem-merge=off).
	Merge bool
}

// ParseSize reads "8G", "512M", "1T", "4096K" or a plain number of bytes.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'K', 'k':
		mult = 1 << 10
	case 'M', 'm':
		mult = 1 << 20
	case 'G', 'g':
		mult = 1 << 30
	case 'T', 't':
		mult = 1 << 40
	}
	num := s
	if mult != 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size such as 512M or 8G", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// parseKV splits "a=1,b=2" into pairs; a bare word w becomes w="".
func parseKV(s string) (map[string]string, []string, error) {
	m := map[string]string{}
	var order []string
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			return nil, nil, fmt.Errorf("empty item in %q", s)
		}
		k, v, _ := strings.Cut(part, "=")
		if _, dup := m[k]; dup {
			return nil, nil, fmt.Errorf("%s given twice", k)
		}
		m[k] = v
		order = append(order, k)
	}
	return m, order, nil
}

// ParseDisk parses one diskN value.
func ParseDisk(key, v string) (Disk, error) {
	kv, _, err := parseKV(v)
	if err != nil {
		return Disk{}, err
	}
	d := Disk{Key: key}
	for k, val := range kv {
		switch k {
		case "size":
			if d.Size, err = ParseSize(val); err != nil {
				return Disk{}, err
			}
		case "file":
			d.File = val
		case "backing":
			d.Backing = val
		case "image":
			if err := image.ValidName(val); err != nil {
				return Disk{}, fmt.Errorf("image=%q is not an image name (see berth image list)", val)
			}
			d.Image = val
		case "format":
			if val != "raw" && val != "qcow2" {
				return Disk{}, fmt.Errorf("format %q: use raw or qcow2", val)
			}
			d.Format = val
		default:
			return Disk{}, fmt.Errorf("unknown disk option %q (use size=, file=, backing=, image=, format=)", k)
		}
	}
	for _, p := range []string{d.File, d.Backing} {
		if p != "" && (!filepath.IsAbs(p) || strings.ContainsAny(p, ",\n")) {
			return Disk{}, fmt.Errorf("path %q must be absolute and contain no comma", p)
		}
	}
	sources := 0
	for _, v := range []string{d.File, d.Backing, d.Image} {
		if v != "" {
			sources++
		}
	}
	switch {
	case sources > 1:
		return Disk{}, fmt.Errorf("give one of file=, backing= and image=")
	case d.File != "" && d.Size != 0:
		return Disk{}, fmt.Errorf("file= disks use the file's size: drop size=")
	case sources == 0 && d.Size == 0:
		return Disk{}, fmt.Errorf("a disk needs size= (a new qcow2 image), image=NAME, file= or backing=")
	case d.File == "" && d.Format == "raw":
		return Disk{}, fmt.Errorf("new and overlay disks are qcow2")
	}
	if d.File == "" {
		d.Format = "qcow2"
	} else if d.Format == "" {
		d.Format = "raw"
		if strings.HasSuffix(d.File, ".qcow2") {
			d.Format = "qcow2"
		}
	}
	return d, nil
}

// ParseMAC checks a unicast Ethernet address.
func ParseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%q is not a MAC address such as 52:54:00:12:34:56", s)
	}
	if hw[0]&1 != 0 {
		return "", fmt.Errorf("%s is a multicast address; a NIC needs a unicast one (first octet even)", s)
	}
	return hw.String(), nil
}

// ParseNIC parses one netN value.
func ParseNIC(key string, index int, v string) (NIC, error) {
	kv, _, err := parseKV(v)
	if err != nil {
		return NIC{}, err
	}
	n := NIC{Key: key, Index: index, Model: "virtio-net"}
	for k, val := range kv {
		switch k {
		case "bridge":
			if !tap.ValidName(val) {
				return NIC{}, fmt.Errorf("bridge %q is not a valid interface name", val)
			}
			n.Bridge = val
		case "model":
			if val != "virtio-net" && val != "e1000" {
				return NIC{}, fmt.Errorf("model %q: use virtio-net or e1000", val)
			}
			n.Model = val
		case "macaddr":
			if n.MAC, err = ParseMAC(val); err != nil {
				return NIC{}, err
			}
		default:
			return NIC{}, fmt.Errorf("unknown net option %q (use bridge=, model=, macaddr=)", k)
		}
	}
	if n.Bridge == "" {
		return NIC{}, fmt.Errorf("bridge= is required")
	}
	return n, nil
}

// DefaultMAC derives a stable locally administered address from the guest
// ID and NIC index, so a VM keeps its address without storing one.
func DefaultMAC(id, index int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("berth-vm-%d-%d", id, index)))
	return net.HardwareAddr{0x52, 0x54, 0x00, sum[0], sum[1], sum[2]}.String()
}

// ParseSpec parses and checks a VM configuration without touching the
// host. Errors are keyed by option name.
func ParseSpec(cfg map[string]string) (Spec, map[string]string) {
	errs := map[string]string{}
	s := Spec{MemoryMiB: 512, Cores: 1, BIOS: "seabios", Boot: []string{"disk", "cdrom", "net"}}
	intOpt := func(k string, lo, hi int, dst *int) {
		v, ok := cfg[k]
		if !ok {
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			errs[k] = fmt.Sprintf("%q: want a number from %d to %d", v, lo, hi)
			return
		}
		*dst = n
	}
	intOpt("memory", 16, 4<<20, &s.MemoryMiB)
	intOpt("cores", 1, 256, &s.Cores)
	known := map[string]bool{"memory": true, "cores": true, "cdrom": true, "boot": true, "bios": true, "kernel": true, "initrd": true, "append": true, ksm.GuestKey: true}
	merge, err := ksm.GuestMerge(api.Guest{Config: cfg})
	if err != nil {
		errs[ksm.GuestKey] = err.Error()
	}
	s.Merge = merge
	for i := range MaxDisks {
		k := fmt.Sprintf("disk%d", i)
		known[k] = true
		if v, ok := cfg[k]; ok {
			d, err := ParseDisk(k, v)
			if err != nil {
				errs[k] = err.Error()
				continue
			}
			s.Disks = append(s.Disks, d)
		}
	}
	for i := range MaxNICs {
		k := fmt.Sprintf("net%d", i)
		known[k] = true
		if v, ok := cfg[k]; ok {
			n, err := ParseNIC(k, i, v)
			if err != nil {
				errs[k] = err.Error()
				continue
			}
			s.NICs = append(s.NICs, n)
		}
	}
	for k := range cfg {
		if !known[k] {
			errs[k] = "unknown VM option (known: memory, cores, disk0-7, net0-7, cdrom, boot, bios, kernel, initrd, append, ksm)"
		}
	}
	for _, k := range []string{"cdrom", "kernel", "initrd"} {
		if v, ok := cfg[k]; ok && (!filepath.IsAbs(v) || strings.Contains(v, ",")) {
			errs[k] = fmt.Sprintf("%q must be an absolute path without commas", v)
		}
	}
	s.CDROM, s.Kernel, s.Initrd, s.Append = cfg["cdrom"], cfg["kernel"], cfg["initrd"], cfg["append"]
	if s.Initrd != "" && s.Kernel == "" {
		errs["initrd"] = "initrd= needs kernel="
	}
	if s.Append != "" && s.Kernel == "" {
		errs["append"] = "append= needs kernel="
	}
	if v, ok := cfg["bios"]; ok {
		if v != "seabios" && v != "ovmf" {
			errs["bios"] = fmt.Sprintf("%q: use seabios or ovmf", v)
		}
		s.BIOS = v
	}
	if v, ok := cfg["boot"]; ok {
		order, err := ParseBoot(v)
		if err != nil {
			errs["boot"] = err.Error()
		}
		s.Boot = order
		if slices.Contains(order, "net") && len(s.NICs) == 0 && errs["boot"] == "" {
			errs["boot"] = "order includes net, but the VM has no NIC: add one with net0=bridge=BR"
		}
	}
	if len(errs) > 0 {
		return Spec{}, errs
	}
	return s, nil
}

// ParseBoot reads "order=disk,net,cdrom" (or just "disk,net").
func ParseBoot(v string) ([]string, error) {
	v = strings.TrimPrefix(v, "order=")
	var order []string
	for _, dev := range strings.Split(v, ",") {
		switch dev {
		case "disk", "net", "cdrom":
		default:
			return nil, fmt.Errorf("boot device %q: use order=disk,net,cdrom (any subset, in order)", dev)
		}
		if slices.Contains(order, dev) {
			return nil, fmt.Errorf("boot device %q given twice", dev)
		}
		order = append(order, dev)
	}
	return order, nil
}

// kind guards the driver against being handed other guests.
const kind = api.GuestVM
