package container

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ksm"
)

// Config keys a container understands (guest.Config).
const (
	KeyImage      = "image"
	KeyHostname   = "hostname"
	KeyMemory     = "memory"   // MiB
	KeySwap       = "swap"     // MiB
	KeyCores      = "cores"    // number of CPUs (cpuset)
	KeyCPULimit   = "cpulimit" // CPUs' worth of time, 0 = unlimited
	KeyCPUUnits   = "cpuunits" // weight 1-10000, default 100
	KeyPids       = "pids"     // maximum tasks
	KeyPrivileged = "privileged"
	KeyInit       = "init" // init command line, default /sbin/init
	// KeyNetPrefix starts the NIC keys net0 … net9.
	KeyNetPrefix = "net"
)

// MaxNICs bounds the NIC keys net0 … net9.
const MaxNICs = 10

// settings is a container's configuration, parsed.
type settings struct {
	Image      string
	Hostname   string
	MemoryMiB  int64
	SwapMiB    int64
	Cores      int
	CPULimit   float64
	CPUUnits   int
	Pids       int64
	Privileged bool
	Init       []string
	Nets       []nic
	// KSM is the ksm option: default, on (all memory mergeable) or off.
	KSM ksm.Choice
}

// nic is one netN option: "name=eth0,bridge=vmbr0,ip=dhcp|CIDR,gw=IP,hwaddr=MAC".
type nic struct {
	Index   int
	Name    string
	Bridge  string
	IP      string // "", "dhcp" or a CIDR
	Gateway string
	HWAddr  string
}

var (
	ifnameRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

// maxMemoryMiB bounds memory and swap (16 TiB).
const maxMemoryMiB = 16 << 20

// parse reads and checks cfg; problems are returned per config key.
func parse(g api.Guest, cpus int) (settings, map[string]string) {
	c := g.Config
	s := settings{Image: c[KeyImage], Hostname: c[KeyHostname]}
	bad := map[string]string{}
	if s.Image == "" {
		bad[KeyImage] = "a container needs an image: give --image NAME (see 'berth image list')"
	}
	if s.Hostname == "" {
		s.Hostname = g.Name
	}
	if s.Hostname == "" {
		s.Hostname = "ct" + strconv.Itoa(g.ID)
	}
	if !hostnameRE.MatchString(s.Hostname) {
		bad[KeyHostname] = fmt.Sprintf("%q is not a valid host name (letters, digits and inner '-', at most 63)", s.Hostname)
	}
	num := func(key string, min, max int64) int64 {
		v, ok := c[key]
		if !ok || v == "" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < min || n > max {
			bad[key] = fmt.Sprintf("%q must be a whole number from %d to %d", v, min, max)
			return 0
		}
		return n
	}
	s.MemoryMiB = num(KeyMemory, 16, maxMemoryMiB)
	s.SwapMiB = num(KeySwap, 0, maxMemoryMiB)
	if s.SwapMiB > 0 && s.MemoryMiB == 0 {
		bad[KeySwap] = "swap needs a memory limit too (--memory MiB)"
	}
	s.Cores = int(num(KeyCores, 1, 8192))
	if s.Cores > cpus {
		bad[KeyCores] = fmt.Sprintf("%d cores asked for, but this host has %d CPUs", s.Cores, cpus)
	}
	if v := c[KeyCPULimit]; v != "" {
		f, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil || f < 0 || f > 8192:
			bad[KeyCPULimit] = fmt.Sprintf("%q must be a number of CPUs from 0 (unlimited) to 8192, e.g. 1.5", v)
		case f > float64(cpus):
			bad[KeyCPULimit] = fmt.Sprintf("cpulimit %s is more than the %d CPUs of this host", v, cpus)
		case f > 0 && f < 0.01:
			bad[KeyCPULimit] = "cpulimit below 0.01 CPUs would starve the container"
		default:
			s.CPULimit = f
		}
	}
	s.CPUUnits = int(num(KeyCPUUnits, 1, 10000))
	s.Pids = num(KeyPids, 8, 4194304)
	switch c[KeyPrivileged] {
	case "", "0":
	case "1":
		s.Privileged = true
	default:
		bad[KeyPrivileged] = fmt.Sprintf("%q: use 1 (privileged, no user namespace) or 0", c[KeyPrivileged])
	}
	if v := c[KeyInit]; v != "" {
		s.Init = strings.Fields(v)
		if !strings.HasPrefix(s.Init[0], "/") {
			bad[KeyInit] = fmt.Sprintf("%q: give the absolute path of the init program inside the container", v)
		}
	}
	names := map[string]string{}
	// In key order: of two NICs with one name, the later is reported.
	for _, k := range slices.Sorted(maps.Keys(c)) {
		v := c[k]
		rest, ok := strings.CutPrefix(k, KeyNetPrefix)
		if !ok {
			continue
		}
		idx, err := strconv.Atoi(rest)
		if err != nil || idx < 0 || idx >= MaxNICs || strconv.Itoa(idx) != rest {
			bad[k] = fmt.Sprintf("NICs are net0 to net%d", MaxNICs-1)
			continue
		}
		n, err := parseNIC(idx, v)
		if err != nil {
			bad[k] = err.Error()
			continue
		}
		if other, dup := names[n.Name]; dup {
			bad[k] = fmt.Sprintf("interface name %s is also used by %s", n.Name, other)
			continue
		}
		names[n.Name] = k
		s.Nets = append(s.Nets, n)
	}
	sort.Slice(s.Nets, func(i, j int) bool { return s.Nets[i].Index < s.Nets[j].Index })
	if ch, err := ksm.GuestChoice(g); err != nil {
		bad[ksm.GuestKey] = err.Error()
	} else {
		s.KSM = ch
	}
	for k := range c {
		if !known(k) && k != ksm.GuestKey {
			bad[k] = "unknown container option (known: image, hostname, memory, swap, cores, cpulimit, cpuunits, pids, privileged, init, net0-net9, ksm)"
		}
	}
	return s, bad
}

func known(k string) bool {
	switch k {
	case KeyImage, KeyHostname, KeyMemory, KeySwap, KeyCores, KeyCPULimit, KeyCPUUnits, KeyPids, KeyPrivileged, KeyInit:
		return true
	}
	return strings.HasPrefix(k, KeyNetPrefix)
}

// ParseNIC parses one netN value (exported for the CLI's early checks).
func ParseNIC(v string) error {
	_, err := parseNIC(0, v)
	return err
}

func parseNIC(idx int, v string) (nic, error) {
	n := nic{Index: idx, Name: "eth" + strconv.Itoa(idx)}
	seen := map[string]bool{}
	for _, part := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || val == "" {
			return n, fmt.Errorf("%q is not key=value (want name=eth0,bridge=BR,ip=dhcp|CIDR,gw=IP,hwaddr=MAC)", part)
		}
		if seen[k] {
			return n, fmt.Errorf("%s given twice", k)
		}
		seen[k] = true
		switch k {
		case "name":
			if !ifnameRE.MatchString(val) || val == "lo" {
				return n, fmt.Errorf("name %q is not a valid interface name (1-15 letters, digits, '_', '.', '-')", val)
			}
			n.Name = val
		case "bridge":
			if !ifnameRE.MatchString(val) {
				return n, fmt.Errorf("bridge %q is not a valid interface name", val)
			}
			n.Bridge = val
		case "ip":
			if val != "dhcp" && val != "manual" {
				p, err := netip.ParsePrefix(val)
				if err != nil || !p.Addr().Is4() && !p.Addr().Is6() {
					return n, fmt.Errorf("ip %q is neither dhcp nor an address with prefix length such as 10.0.0.5/24", val)
				}
				if p.Addr() == p.Masked().Addr() && p.Bits() < p.Addr().BitLen()-1 {
					return n, fmt.Errorf("ip %q is a network address, not a host address", val)
				}
			}
			n.IP = val
		case "gw":
			if _, err := netip.ParseAddr(val); err != nil {
				return n, fmt.Errorf("gw %q is not an IP address", val)
			}
			n.Gateway = val
		case "hwaddr":
			mac, err := net.ParseMAC(val)
			if err != nil || len(mac) != 6 || mac[0]&1 == 1 {
				return n, fmt.Errorf("hwaddr %q is not a unicast MAC address like 02:00:00:00:00:01", val)
			}
			n.HWAddr = mac.String()
		default:
			return n, fmt.Errorf("unknown key %q (want name, bridge, ip, gw, hwaddr)", k)
		}
	}
	if n.Bridge == "" {
		return n, fmt.Errorf("bridge= is required: name the host bridge to attach the NIC to")
	}
	if n.Gateway != "" {
		if n.IP == "" || n.IP == "dhcp" {
			return n, fmt.Errorf("gw needs a static ip=CIDR")
		}
		p := netip.MustParsePrefix(n.IP)
		gw := netip.MustParseAddr(n.Gateway)
		if p.Addr().Is4() != gw.Is4() {
			return n, fmt.Errorf("gw %s and ip %s are not of the same IP version", n.Gateway, n.IP)
		}
	}
	return n, nil
}

// MAC derives a stable, locally administered unicast MAC for NIC index of
// guest id: the same guest and NIC always get the same address.
func MAC(id, index int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("berth-ct/%d/net%d", id, index)))
	sum[0] = (sum[0] | 0x02) &^ 0x01
	return net.HardwareAddr(sum[:6]).String()
}

// hostVeth is the host-side name of NIC index of guest id ("veth101i0"),
// as Proxmox names them.
func hostVeth(id, index int) string {
	return fmt.Sprintf("veth%di%d", id, index)
}
