package ifupdown

import (
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Config is a main interfaces file with everything it includes, merged
// into interfaces the way ifupdown2 does: several stanzas of one name add
// up.
type Config struct {
	// Files are the main file first, then the included ones in the
	// order they were included.
	Files  []*File
	Ifaces []*Iface
	// Auto and Hotplug hold the names of auto and allow-hotplug lines.
	Auto, Hotplug map[string]bool
	byName        map[string]*Iface
}

// Iface is one interface with all its stanzas. It is a snapshot: after
// editing the File, build a new Config.
type Iface struct {
	Name    string
	Stanzas []*Stanza
	// Auto is set by an auto line, Hotplug by allow-hotplug.
	Auto, Hotplug bool

	opts []Option // cached Options
	typ  string   // cached Type
}

// Iface returns the interface named name, or nil.
func (c *Config) Iface(name string) *Iface { return c.byName[name] }

// Options returns every option of every stanza of the interface in order.
func (i *Iface) Options() []Option {
	if i.opts == nil {
		out := []Option{}
		for _, s := range i.Stanzas {
			out = append(out, s.Options()...)
		}
		i.opts = out
	}
	return i.opts
}

// Get returns the last value of key (ifupdown2: a later stanza wins).
func (i *Iface) Get(key string) (string, bool) {
	var v string
	found := false
	for _, o := range i.Options() {
		if o.Key == key || o.Key == strings.ReplaceAll(key, "-", "_") {
			v, found = o.Value, true
		}
	}
	return v, found
}

// Opt returns the last option of key, or nil.
func (i *Iface) Opt(key string) *Option {
	var out *Option
	for _, o := range i.Options() {
		if o.Key == key || o.Key == strings.ReplaceAll(key, "-", "_") {
			o := o
			out = &o
		}
	}
	return out
}

// List returns the words of key's value ("bridge-ports eno1 eno2").
func (i *Iface) List(key string) []string {
	v, _ := i.Get(key)
	return strings.Fields(v)
}

// Method is the method of the interface's stanza for family ("" when the
// interface has none).
func (i *Iface) Method(family string) string {
	m := ""
	for _, s := range i.Stanzas {
		if s.Family == family {
			m = s.Method
		}
	}
	return m
}

// Line is where the interface is first defined.
func (i *Iface) Line() (string, int) {
	h := i.Stanzas[0].Lines[0]
	return i.Stanzas[0].File.Path, h.Num
}

// Type of interfaces, derived from names and options as ifupdown2 does.
const (
	TypeLoopback = "loopback"
	TypeBridge   = "bridge"
	TypeBond     = "bond"
	TypeVLAN     = "vlan"
	TypeDummy    = "dummy"
	TypeAlias    = "alias"
	TypePhysical = "eth"
)

// Type is the interface's kind: bridge-ports make a bridge, bond-slaves a
// bond, NAME.VID or vlan-raw-device a VLAN, link-type dummy a dummy;
// anything else is a physical NIC.
func (i *Iface) Type() string {
	if i.typ == "" {
		i.typ = i.findType()
	}
	return i.typ
}

func (i *Iface) findType() string {
	switch {
	case i.Name == "lo" || i.Method("inet") == "loopback" || i.Method("inet6") == "loopback":
		return TypeLoopback
	case i.Opt("bridge-ports") != nil:
		return TypeBridge
	case i.Opt("bond-slaves") != nil:
		return TypeBond
	case i.Opt("vlan-raw-device") != nil || strings.Contains(i.Name, "."):
		return TypeVLAN
	}
	if v, _ := i.Get("link-type"); v == "dummy" {
		return TypeDummy
	}
	if strings.Contains(i.Name, ":") {
		return TypeAlias
	}
	return TypePhysical
}

// Ports are the bridge's ports (none for "bridge-ports none").
func (i *Iface) Ports() []string {
	ps := i.List("bridge-ports")
	if len(ps) == 1 && ps[0] == "none" {
		return nil
	}
	return ps
}

// Slaves are the bond's slaves.
func (i *Iface) Slaves() []string {
	ps := i.List("bond-slaves")
	if len(ps) == 1 && ps[0] == "none" {
		return nil
	}
	return ps
}

// VLAN returns the VLAN's raw device and ID, from vlan-raw-device and
// vlan-id or from a NAME.VID name.
func (i *Iface) VLAN() (raw string, id int, err error) {
	if r, ok := i.Get("vlan-raw-device"); ok {
		raw = r
		if v, ok := i.Get("vlan-id"); ok {
			id, err = strconv.Atoi(v)
			if err != nil {
				return raw, 0, fmt.Errorf("vlan-id %q is not a number", v)
			}
			return raw, id, nil
		}
		m := trailingDigits.FindString(i.Name)
		if m == "" {
			return raw, 0, fmt.Errorf("no vlan-id and no VLAN number at the end of the name: add 'vlan-id N'")
		}
		id, err = strconv.Atoi(m)
		return raw, id, err
	}
	k := strings.LastIndexByte(i.Name, '.')
	if k < 0 {
		return "", 0, fmt.Errorf("not a VLAN name")
	}
	id, err = strconv.Atoi(i.Name[k+1:])
	if err != nil {
		return i.Name[:k], 0, fmt.Errorf("VLAN ID %q after the dot is not a number", i.Name[k+1:])
	}
	return i.Name[:k], id, nil
}

// Addresses returns the static addresses of the interface (address lines
// as CIDR, or with a netmask option), for both families.
func (i *Iface) Addresses() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range i.Stanzas {
		if s.Method != "static" && s.Method != "" {
			continue
		}
		mask := ""
		for _, o := range s.Options() {
			if o.Key == "netmask" {
				mask = o.Value
			}
		}
		for _, o := range s.Options() {
			if o.Key != "address" {
				continue
			}
			for _, a := range strings.Fields(o.Value) {
				p, err := ParseAddress(a, mask)
				if err != nil {
					return nil, err
				}
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// ParseAddress reads ADDR/LEN, or ADDR with a dotted or numeric netmask.
func ParseAddress(a, mask string) (netip.Prefix, error) {
	if strings.Contains(a, "/") {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return p, fmt.Errorf("address %q is not in CIDR form ADDR/LEN: %w", a, err)
		}
		return p, nil
	}
	ip, err := netip.ParseAddr(a)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address %q is not an IP address", a)
	}
	if mask == "" {
		return netip.Prefix{}, fmt.Errorf("address %q has no prefix length: write it as %s/24 (or the right length)", a, a)
	}
	bits := -1
	if n, err := strconv.Atoi(mask); err == nil {
		bits = n
	} else if m, err := netip.ParseAddr(mask); err == nil && m.Is4() {
		b := m.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		ones := 0
		for v&(1<<31) != 0 {
			ones++
			v <<= 1
		}
		if v == 0 {
			bits = ones
		}
	}
	if bits < 0 || bits > ip.BitLen() {
		return netip.Prefix{}, fmt.Errorf("netmask %q is not a valid mask for %s", mask, a)
	}
	return netip.PrefixFrom(ip, bits), nil
}

// Reader reads files for Load; os.ReadFile and os.ReadDir on a real root.
type Reader interface {
	ReadFile(path string) ([]byte, error)
	ReadDir(path string) ([]fs.DirEntry, error)
	Glob(pattern string) ([]string, error)
}

type osReader struct{}

func (osReader) ReadFile(p string) ([]byte, error)       { return os.ReadFile(p) }
func (osReader) ReadDir(p string) ([]fs.DirEntry, error) { return os.ReadDir(p) }
func (osReader) Glob(p string) ([]string, error)         { return filepath.Glob(p) }

// OS reads the real file system.
var OS Reader = osReader{}

var (
	sourceDirName  = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	trailingDigits = regexp.MustCompile(`(\d+)$`)
)

// Load reads path and, recursively, the files its source and
// source-directory lines include. main, when not nil, is used as the
// content of path (a staged file being judged in its place). Relative
// include paths are taken from path's directory.
func Load(r Reader, path string, main []byte) (*Config, error) {
	c := newConfig()
	seen := map[string]bool{}
	var load func(p string, data []byte, depth int) error
	load = func(p string, data []byte, depth int) error {
		if depth > 16 {
			return fmt.Errorf("%s: includes nest more than 16 deep (a source loop?)", p)
		}
		if seen[p] {
			return nil
		}
		seen[p] = true
		if data == nil {
			var err error
			if data, err = r.ReadFile(p); err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
		}
		f, err := Parse(p, data)
		if err != nil {
			return err
		}
		c.Files = append(c.Files, f)
		dir := filepath.Dir(p)
		for _, s := range f.Stanzas {
			switch s.Kind {
			case Source:
				pat := s.Arg
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(dir, pat)
				}
				ms, err := r.Glob(pat)
				if err != nil {
					return fmt.Errorf("%s:%d: source %s: %w", p, s.Lines[0].Num, s.Arg, err)
				}
				sort.Strings(ms)
				for _, m := range ms {
					if err := load(m, nil, depth+1); err != nil {
						return err
					}
				}
			case SourceDir:
				d := s.Arg
				if !filepath.IsAbs(d) {
					d = filepath.Join(dir, d)
				}
				ents, err := r.ReadDir(d)
				if err != nil && !os.IsNotExist(err) {
					return fmt.Errorf("%s:%d: source-directory %s: %w", p, s.Lines[0].Num, s.Arg, err)
				}
				for _, e := range ents {
					if !e.IsDir() && sourceDirName.MatchString(e.Name()) {
						if err := load(filepath.Join(d, e.Name()), nil, depth+1); err != nil {
							return err
						}
					}
				}
			default:
				c.add(s)
			}
		}
		return nil
	}
	if err := load(path, main, 0); err != nil {
		return nil, err
	}
	c.finish()
	return c, nil
}

// FromFile builds a Config from one already parsed file, without
// following its includes; edits to f show in the Config.
func FromFile(f *File) *Config {
	c := newConfig()
	c.Files = []*File{f}
	for _, s := range f.Stanzas {
		c.add(s)
	}
	c.finish()
	return c
}

func newConfig() *Config {
	return &Config{Auto: map[string]bool{}, Hotplug: map[string]bool{}, byName: map[string]*Iface{}}
}

// add records an auto, allow or iface stanza.
func (c *Config) add(s *Stanza) {
	switch s.Kind {
	case Auto:
		for _, n := range s.Names {
			c.Auto[n] = true
		}
	case Allow:
		if s.Keyword == "allow-hotplug" {
			for _, n := range s.Names {
				c.Hotplug[n] = true
			}
		}
	case IfaceKind:
		i := c.byName[s.Name()]
		if i == nil {
			i = &Iface{Name: s.Name()}
			c.byName[s.Name()] = i
			c.Ifaces = append(c.Ifaces, i)
		}
		i.Stanzas = append(i.Stanzas, s)
		i.opts, i.typ = nil, ""
	}
}

func (c *Config) finish() {
	for _, i := range c.Ifaces {
		i.Auto, i.Hotplug = c.Auto[i.Name], c.Hotplug[i.Name]
	}
}

// Names returns the interface names in order of definition.
func (c *Config) Names() []string {
	out := make([]string, len(c.Ifaces))
	for k, i := range c.Ifaces {
		out[k] = i.Name
	}
	return out
}

// Up is the set ifreload -a brings up: auto and allow-hotplug interfaces
// and, recursively, the ports, slaves and raw devices they need.
func (c *Config) Up() []string {
	want := map[string]bool{}
	var add func(n string)
	add = func(n string) {
		if want[n] {
			return
		}
		want[n] = true
		i := c.byName[n]
		if i == nil {
			return
		}
		for _, d := range c.Deps(i) {
			add(d)
		}
	}
	for _, i := range c.Ifaces {
		if i.Auto || i.Hotplug {
			add(i.Name)
		}
	}
	var out []string
	for _, i := range c.Ifaces {
		if want[i.Name] {
			out = append(out, i.Name)
		}
	}
	return out
}

// Deps are the interfaces i needs before it can come up.
func (c *Config) Deps(i *Iface) []string {
	switch i.Type() {
	case TypeBridge:
		return i.Ports()
	case TypeBond:
		return i.Slaves()
	case TypeVLAN:
		raw, _, _ := i.VLAN()
		if raw != "" {
			return []string{raw}
		}
	}
	return nil
}

// Order returns names sorted so that every interface comes after its
// dependencies (ports before bridges, slaves before bonds, raw devices
// before VLANs); ties keep file order.
func (c *Config) Order(names []string) []string {
	in := map[string]bool{}
	for _, n := range names {
		in[n] = true
	}
	var out []string
	done := map[string]bool{}
	var visit func(n string, depth int)
	visit = func(n string, depth int) {
		if done[n] || depth > len(names)+1 {
			return
		}
		if i := c.byName[n]; i != nil {
			for _, d := range c.Deps(i) {
				if in[d] {
					visit(d, depth+1)
				}
			}
		}
		if !done[n] {
			done[n] = true
			out = append(out, n)
		}
	}
	for _, n := range names {
		visit(n, 0)
	}
	return slices.Clip(out)
}
