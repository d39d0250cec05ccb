package uml

import (
	"crypto/sha256"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/tap"
)

// MaxDisks and MaxNICs bound the diskN (ubdN) and netN (ethN) options.
const (
	MaxDisks = 8
	MaxNICs  = 8
)

// Disk is one diskN option: "PATH[,cow][,ro]" or "image=NAME[,cow][,ro]".
// With cow the file is a read-only base and the guest writes to its own
// COW file. An image from berth's image store (its ext4 root image) is
// always shared: cow unless ro is given.
type Disk struct {
	Key   string
	Index int
	// Image is the file's path; for an image=NAME disk the driver fills
	// it in from the store.
	Image string
	// ImageName names an image in berth's image store.
	ImageName string
	COW       bool
	RO        bool
}

// NIC is one netN option: "tuntap,bridge=BR[,macaddr=MAC]",
// "mcast[,GROUP[:PORT]]" or "daemon[,SOCKET]".
type NIC struct {
	Key    string
	Index  int
	Mode   string
	Bridge string
	MAC    string
	Group  string
	Port   int
	Socket string
}

// Spec is a UML guest's parsed configuration.
type Spec struct {
	MemoryMiB int
	Disks     []Disk
	NICs      []NIC
	// Console is the main console's channel: fd (berth's console
	// relay, the default), pty, port:N, null or none.
	Console string
	// Serial is the channel for the serial lines (ssl=): null by default.
	Serial string
	Append string
	Kernel string
}

// ParseChannel checks a console or serial line channel as the UML HOWTO
// describes them, restricted to those a daemon can use: fd (berth's relay,
// main console only), pty, pts, port:N, null and none.
func ParseChannel(v string, main bool) error {
	switch {
	case v == "fd" && main, v == "pty", v == "pts", v == "null", v == "none":
		return nil
	case strings.HasPrefix(v, "port:"):
		n, err := strconv.Atoi(strings.TrimPrefix(v, "port:"))
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port:N needs a TCP port from 1 to 65535", v)
		}
		return nil
	}
	if main {
		return fmt.Errorf("%q: use fd (berth's console, attach with berth uml console), pty, pts, port:N, null or none", v)
	}
	return fmt.Errorf("%q: use pty, pts, port:N, null or none", v)
}

// ChannelPort returns N for "port:N", else 0.
func ChannelPort(v string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(v, "port:"))
	if !strings.HasPrefix(v, "port:") {
		return 0
	}
	return n
}

// ParseDisk parses one diskN value.
func ParseDisk(key string, index int, v string) (Disk, error) {
	parts := strings.Split(v, ",")
	d := Disk{Key: key, Index: index, Image: parts[0]}
	if name, ok := strings.CutPrefix(parts[0], "image="); ok {
		if err := image.ValidName(name); err != nil {
			return Disk{}, fmt.Errorf("image=%q is not an image name (see berth image list)", name)
		}
		d.Image, d.ImageName = "", name
	} else if !filepath.IsAbs(d.Image) || strings.ContainsAny(d.Image, " \n\t") {
		return Disk{}, fmt.Errorf("image %q must be an absolute path without spaces, or image=NAME for an image from berth's store", d.Image)
	}
	for _, p := range parts[1:] {
		switch p {
		case "cow":
			d.COW = true
		case "ro":
			d.RO = true
		default:
			return Disk{}, fmt.Errorf("unknown disk flag %q (use PATH[,cow][,ro] or image=NAME[,cow][,ro])", p)
		}
	}
	if d.COW && d.RO {
		return Disk{}, fmt.Errorf("cow and ro exclude each other: a COW disk is writable, its base never is")
	}
	// Images are shared by every guest made from them: never written.
	if d.ImageName != "" && !d.RO {
		d.COW = true
	}
	return d, nil
}

// ParseNIC parses one netN value.
func ParseNIC(key string, index int, v string) (NIC, error) {
	parts := strings.Split(v, ",")
	n := NIC{Key: key, Index: index, Mode: parts[0]}
	switch n.Mode {
	case "tuntap":
		for _, p := range parts[1:] {
			k, val, _ := strings.Cut(p, "=")
			switch k {
			case "bridge":
				if !tap.ValidName(val) {
					return NIC{}, fmt.Errorf("bridge %q is not a valid interface name", val)
				}
				n.Bridge = val
			case "macaddr":
				hw, err := net.ParseMAC(val)
				if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
					return NIC{}, fmt.Errorf("%q is not a unicast MAC address such as fe:fd:0a:00:00:02", val)
				}
				n.MAC = hw.String()
			default:
				return NIC{}, fmt.Errorf("unknown tuntap option %q (use bridge=, macaddr=)", p)
			}
		}
		if n.Bridge == "" {
			return NIC{}, fmt.Errorf("tuntap needs bridge=BR")
		}
	case "mcast":
		n.Group, n.Port = "239.192.168.1", 1102
		if len(parts) > 2 {
			return NIC{}, fmt.Errorf("use mcast or mcast,GROUP[:PORT]")
		}
		if len(parts) == 2 {
			host, port, found := strings.Cut(parts[1], ":")
			ip := net.ParseIP(host)
			if ip == nil || ip.To4() == nil || !ip.IsMulticast() {
				return NIC{}, fmt.Errorf("%q is not an IPv4 multicast group such as 239.192.168.1", host)
			}
			n.Group = ip.String()
			if found {
				p, err := strconv.Atoi(port)
				if err != nil || p < 1 || p > 65535 {
					return NIC{}, fmt.Errorf("%q is not a UDP port", port)
				}
				n.Port = p
			}
		}
	case "daemon":
		n.Socket = "/var/run/uml-utilities/uml_switch.ctl"
		if len(parts) > 2 {
			return NIC{}, fmt.Errorf("use daemon or daemon,SOCKET")
		}
		if len(parts) == 2 {
			if !filepath.IsAbs(parts[1]) {
				return NIC{}, fmt.Errorf("uml_switch socket %q must be an absolute path", parts[1])
			}
			n.Socket = parts[1]
		}
	default:
		return NIC{}, fmt.Errorf("%q: use tuntap,bridge=BR, mcast[,GROUP[:PORT]] or daemon[,SOCKET]", n.Mode)
	}
	return n, nil
}

// DefaultMAC derives a stable address in UML's fe:fd prefix from the guest
// ID and NIC index.
func DefaultMAC(id, index int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("berth-uml-%d-%d", id, index)))
	return net.HardwareAddr{0xfe, 0xfd, sum[0], sum[1], sum[2], sum[3]}.String()
}

// ParseSpec parses and checks a UML configuration without touching the
// host. Errors are keyed by option name.
func ParseSpec(cfg map[string]string) (Spec, map[string]string) {
	errs := map[string]string{}
	s := Spec{MemoryMiB: 128, Console: "fd", Serial: "null", Kernel: "/usr/bin/linux"}
	known := map[string]bool{"memory": true, "console": true, "serial": true, "append": true, "kernel": true, ksm.GuestKey: true}
	// UML's guest memory is a MAP_SHARED mapping of a temporary file
	// (the UML kernel maps it into each guest process), and KSM merges
	// only private anonymous memory: ksm=0 always holds, ksm=1 never can.
	switch c, err := ksm.GuestChoice(api.Guest{Config: cfg}); {
	case err != nil:
		errs[ksm.GuestKey] = err.Error()
	case c == ksm.ChoiceOn:
		errs[ksm.GuestKey] = "a UML guest's memory is a shared file mapping, which KSM cannot merge: remove ksm=1 (ksm=0 is accepted and always true)"
	}
	if v, ok := cfg["memory"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 16 || n > 1<<20 {
			errs["memory"] = fmt.Sprintf("%q: want MiB from 16 to 1048576", v)
		}
		s.MemoryMiB = n
	}
	for i := range MaxDisks {
		k := fmt.Sprintf("disk%d", i)
		known[k] = true
		if v, ok := cfg[k]; ok {
			d, err := ParseDisk(k, i, v)
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
	if v, ok := cfg["console"]; ok {
		if err := ParseChannel(v, true); err != nil {
			errs["console"] = err.Error()
		}
		s.Console = v
	}
	if v, ok := cfg["serial"]; ok {
		if err := ParseChannel(v, false); err != nil {
			errs["serial"] = err.Error()
		}
		s.Serial = v
	}
	if p := ChannelPort(s.Console); p != 0 && p == ChannelPort(s.Serial) {
		errs["serial"] = fmt.Sprintf("port %d is already the console's", p)
	}
	if v, ok := cfg["kernel"]; ok {
		if !filepath.IsAbs(v) {
			errs["kernel"] = fmt.Sprintf("%q must be an absolute path", v)
		}
		s.Kernel = v
	}
	if v, ok := cfg["append"]; ok {
		if strings.ContainsAny(v, "\n\x00") {
			errs["append"] = "kernel arguments must be one line"
		}
		for _, f := range strings.Fields(v) {
			k, _, _ := strings.Cut(f, "=")
			if reserved[k] || strings.HasPrefix(k, "ubd") || strings.HasPrefix(k, "eth") || strings.HasPrefix(k, "con") || strings.HasPrefix(k, "ssl") {
				errs["append"] = fmt.Sprintf("%s= is set by berth from the guest's options: use memory, diskN, netN, console, serial", k)
			}
		}
		s.Append = v
	}
	for k := range cfg {
		if !known[k] {
			errs[k] = "unknown UML option (known: memory, disk0-7, net0-7, console, serial, append, kernel, ksm)"
		}
	}
	if len(errs) > 0 {
		return Spec{}, errs
	}
	return s, nil
}

var reserved = map[string]bool{"mem": true, "umid": true, "uml_dir": true}
