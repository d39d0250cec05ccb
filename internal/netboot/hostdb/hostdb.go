// Package hostdb is the network boot host database: one entry per client
// MAC (name, fixed address, boot file, next server, root path, extra
// DHCP options, iPXE kernel/initrd/command line and diskless root image),
// kept in berth's store under netboot/hosts/ with digests, plus an
// in-memory snapshot that the DHCP server reads on every packet without
// touching the store.
//
// It validates entries and encodes their extra options; it does not parse
// foreign files (the bootptab, dnsmasq and dhcpd subpackages do) and
// serves nothing on the network.
package hostdb

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

// Prefix is where host entries live in the store.
const Prefix = "netboot/hosts/"

// ValidationError reports fields of an entry that are wrong; the API maps
// it to 400 with the per-field messages.
type ValidationError struct {
	MAC    string
	Fields map[string]string
}

func (e *ValidationError) Error() string {
	keys := slices.Sorted(maps.Keys(e.Fields))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + e.Fields[k]
	}
	who := "host"
	if e.MAC != "" {
		who = "host " + e.MAC
	}
	return "invalid netboot " + who + ": " + strings.Join(parts, "; ")
}

// FieldErrors returns the per-field messages.
func (e *ValidationError) FieldErrors() map[string]string { return e.Fields }

// LineError is a line of an imported file that could not be read.
type LineError struct {
	Line int
	Msg  string
}

func (e LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Normalize validates h and returns it in canonical form (lower-case
// colon MAC, canonical addresses).
func Normalize(h wire.NetbootHost) (wire.NetbootHost, error) {
	bad := map[string]string{}
	mac, err := net.ParseMAC(strings.TrimSpace(h.MAC))
	if err != nil || len(mac) != 6 {
		bad["mac"] = fmt.Sprintf("%q is not an Ethernet MAC address: write it as aa:bb:cc:dd:ee:ff", h.MAC)
	} else {
		h.MAC = mac.String()
	}
	if h.Name != "" && !validName(h.Name) {
		bad["name"] = fmt.Sprintf("%q is not a host name: use letters, digits, '-' and '.' (up to 253 characters)", h.Name)
	}
	for field, p := range map[string]*string{"ip": &h.IP, "next-server": &h.NextServer} {
		if *p == "" {
			continue
		}
		a, err := netip.ParseAddr(*p)
		if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
			bad[field] = fmt.Sprintf("%q is not a usable IPv4 address", *p)
			continue
		}
		*p = a.String()
	}
	for field, v := range map[string]string{"bootfile": h.BootFile, "root-path": h.RootPath, "kernel": h.Kernel, "initrd": h.Initrd, "cmdline": h.Cmdline, "comment": h.Comment} {
		if strings.ContainsAny(v, "\x00\n\r") {
			bad[field] = "must be one line without NUL bytes"
		} else if len(v) > 1024 {
			bad[field] = "longer than 1024 bytes"
		}
	}
	if len(h.BootFile) > 127 && bad["bootfile"] == "" {
		bad["bootfile"] = "longer than the 127 bytes the BOOTP file field holds"
	}
	if h.Root != "" && (strings.ContainsAny(h.Root, "/\x00") || h.Root == "." || h.Root == "..") {
		bad["root"] = fmt.Sprintf("%q is not an image name", h.Root)
	}
	for _, f := range []string{h.Kernel, h.Initrd} {
		if f != "" && !strings.Contains(f, "://") && path.IsAbs(f) {
			bad["kernel"] = "kernel and initrd are paths relative to the netboot root, or URLs"
		}
	}
	for k, v := range h.Options {
		if _, err := EncodeOption(k, v); err != nil {
			bad["options."+k] = err.Error()
		}
	}
	if len(bad) > 0 {
		return h, &ValidationError{MAC: h.MAC, Fields: bad}
	}
	return h, nil
}

func validName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// reserved options are set by the server itself.
var reserved = map[int]string{0: "pad", 50: "requested address", 51: "lease time", 52: "overload", 53: "message type", 54: "server identifier", 55: "parameter list", 255: "end"}

// EncodeOption turns an option code and text value into wire bytes: a
// comma-separated list of IPv4 addresses, 0x-prefixed hex, or text.
func EncodeOption(code, v string) ([]byte, error) {
	n, err := strconv.Atoi(code)
	if err != nil || n < 1 || n > 254 {
		return nil, fmt.Errorf("option code %q is not a number from 1 to 254", code)
	}
	if what, ok := reserved[n]; ok {
		return nil, fmt.Errorf("option %d (%s) is set by the server and cannot be overridden", n, what)
	}
	if strings.HasPrefix(v, "0x") {
		b, err := hex.DecodeString(strings.ReplaceAll(v[2:], ":", ""))
		if err != nil {
			return nil, fmt.Errorf("option %d: %q is not hex bytes", n, v)
		}
		return b, nil
	}
	var ips []byte
	for _, part := range strings.Split(v, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(part))
		if err != nil || !a.Is4() {
			ips = nil
			break
		}
		b := a.As4()
		ips = append(ips, b[:]...)
	}
	if ips != nil {
		return ips, nil
	}
	if len(v) > 255*4 {
		return nil, fmt.Errorf("option %d: value too long", n)
	}
	return []byte(v), nil
}

func key(mac string) string { return Prefix + strings.ReplaceAll(mac, ":", "-") }

// DB is the host database. Its snapshot is refreshed after every change
// it makes; Load refreshes it from the store.
type DB struct {
	st   store.Store
	mu   sync.Mutex // serialises writes with snapshot rebuilds
	snap atomic.Pointer[map[string]wire.NetbootHost]
	// OnChange, if set, is called after every change.
	OnChange func()
}

// Open returns the database on st with its snapshot loaded.
func Open(ctx context.Context, st store.Store) (*DB, error) {
	db := &DB{st: st}
	return db, db.Load(ctx)
}

// Load rebuilds the snapshot from the store.
func (db *DB) Load(ctx context.Context) error {
	hs, err := db.List(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]wire.NetbootHost, len(hs))
	for _, h := range hs {
		m[h.MAC] = h
	}
	db.snap.Store(&m)
	return nil
}

// Lookup returns the entry of mac from the snapshot.
func (db *DB) Lookup(mac net.HardwareAddr) (wire.NetbootHost, bool) {
	m := db.snap.Load()
	if m == nil {
		return wire.NetbootHost{}, false
	}
	h, ok := (*m)[mac.String()]
	return h, ok
}

// Snapshot returns every entry by MAC (do not modify).
func (db *DB) Snapshot() map[string]wire.NetbootHost {
	if m := db.snap.Load(); m != nil {
		return *m
	}
	return nil
}

// List returns every entry, by MAC.
func (db *DB) List(ctx context.Context) ([]wire.NetbootHost, error) {
	objs, err := db.st.List(ctx, Prefix)
	if err != nil {
		return nil, fmt.Errorf("list netboot hosts: %w", err)
	}
	out := make([]wire.NetbootHost, 0, len(objs))
	for _, o := range objs {
		h, _, err := store.GetJSON[wire.NetbootHost](ctx, db.st, o.Key)
		if err != nil {
			return nil, err
		}
		h.Digest = o.Digest
		out = append(out, h)
	}
	return out, nil
}

// Get returns one entry.
func (db *DB) Get(ctx context.Context, mac string) (wire.NetbootHost, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return wire.NetbootHost{}, &ValidationError{Fields: map[string]string{"mac": fmt.Sprintf("%q is not a MAC address", mac)}}
	}
	h, digest, err := store.GetJSON[wire.NetbootHost](ctx, db.st, key(hw.String()))
	if errors.Is(err, store.ErrNotFound) {
		return h, fmt.Errorf("netboot host %s: %w", hw, err)
	}
	h.Digest = digest
	return h, err
}

// conflicts checks that no other host has h's fixed address.
func (db *DB) conflicts(h wire.NetbootHost) error {
	if h.IP == "" {
		return nil
	}
	for mac, o := range db.Snapshot() {
		if mac != h.MAC && o.IP == h.IP {
			return &ValidationError{MAC: h.MAC, Fields: map[string]string{"ip": fmt.Sprintf("%s is already the address of host %s (%s)", h.IP, mac, o.Name)}}
		}
	}
	return nil
}

// Add creates an entry; an existing MAC is store.ErrExists.
func (db *DB) Add(ctx context.Context, h wire.NetbootHost) (wire.NetbootHost, error) {
	return db.put(ctx, h, true)
}

// Set replaces an entry; h.Digest, when set, must be current.
func (db *DB) Set(ctx context.Context, h wire.NetbootHost) (wire.NetbootHost, error) {
	return db.put(ctx, h, false)
}

func (db *DB) put(ctx context.Context, h wire.NetbootHost, create bool) (wire.NetbootHost, error) {
	h, err := Normalize(h)
	if err != nil {
		return h, err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.conflicts(h); err != nil {
		return h, err
	}
	cond := store.Cond{Digest: h.Digest}
	if create {
		cond = store.Cond{Create: true}
	} else if h.Digest == "" {
		if _, err := db.st.Get(ctx, key(h.MAC)); err != nil {
			return h, fmt.Errorf("netboot host %s: %w", h.MAC, err)
		}
	}
	h.Digest = ""
	d, err := store.PutJSON(ctx, db.st, key(h.MAC), h, cond)
	if err != nil {
		return h, fmt.Errorf("netboot host %s: %w", h.MAC, err)
	}
	h.Digest = d
	db.update(func(m map[string]wire.NetbootHost) { m[h.MAC] = h })
	return h, nil
}

// Remove deletes an entry.
func (db *DB) Remove(ctx context.Context, mac, digest string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return &ValidationError{Fields: map[string]string{"mac": fmt.Sprintf("%q is not a MAC address", mac)}}
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.st.Delete(ctx, key(hw.String()), store.Cond{Digest: digest}); err != nil {
		return fmt.Errorf("netboot host %s: %w", hw, err)
	}
	db.update(func(m map[string]wire.NetbootHost) { delete(m, hw.String()) })
	return nil
}

// Import writes hosts (already normalized), creating new MACs and
// replacing existing ones, and reports how many of each. It checks every
// entry first and writes nothing if one is invalid or two share a MAC or
// a fixed address.
func (db *DB) Import(ctx context.Context, hosts []wire.NetbootHost) (created, updated int, err error) {
	byMAC := map[string]int{}
	byIP := map[string]string{}
	for i, h := range hosts {
		h, err := Normalize(h)
		if err != nil {
			return 0, 0, err
		}
		if j, dup := byMAC[h.MAC]; dup {
			return 0, 0, &ValidationError{MAC: h.MAC, Fields: map[string]string{"mac": fmt.Sprintf("entries %d and %d have the same MAC", j+1, i+1)}}
		}
		byMAC[h.MAC] = i
		if h.IP != "" {
			if other, dup := byIP[h.IP]; dup {
				return 0, 0, &ValidationError{MAC: h.MAC, Fields: map[string]string{"ip": fmt.Sprintf("%s is also the address of %s in the file", h.IP, other)}}
			}
			byIP[h.IP] = h.MAC
			for mac, o := range db.Snapshot() {
				if o.IP == h.IP && mac != h.MAC {
					if _, replaced := byMAC[mac]; !replaced {
						return 0, 0, &ValidationError{MAC: h.MAC, Fields: map[string]string{"ip": fmt.Sprintf("%s is already the address of host %s", h.IP, mac)}}
					}
				}
			}
		}
		hosts[i] = h
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, h := range hosts {
		_, exists := db.Snapshot()[h.MAC]
		h.Digest = ""
		d, err := store.PutJSON(ctx, db.st, key(h.MAC), h, store.Cond{})
		if err != nil {
			return created, updated, fmt.Errorf("import host %s: %w", h.MAC, err)
		}
		h.Digest = d
		db.update(func(m map[string]wire.NetbootHost) { m[h.MAC] = h })
		if exists {
			updated++
		} else {
			created++
		}
	}
	return created, updated, nil
}

// update copies the snapshot, changes it and publishes it; db.mu held.
func (db *DB) update(fn func(map[string]wire.NetbootHost)) {
	m := maps.Clone(db.Snapshot())
	if m == nil {
		m = map[string]wire.NetbootHost{}
	}
	fn(m)
	db.snap.Store(&m)
	if db.OnChange != nil {
		db.OnChange()
	}
}
