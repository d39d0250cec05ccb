package dhcp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Lease states.
const (
	StateBound    = "bound"
	StateReleased = "released"
	StateDeclined = "declined"
)

// declineHold is how long a declined address stays out of the pool.
const declineHold = 10 * time.Minute

// Lease is one address binding. The journal stores these as JSON lines.
type Lease struct {
	IP        netip.Addr `json:"ip"`
	MAC       string     `json:"mac,omitempty"`
	Hostname  string     `json:"hostname,omitempty"`
	Interface string     `json:"interface,omitempty"`
	// Expires is when the lease ends (Unix seconds).
	Expires int64  `json:"expires"`
	State   string `json:"state"`
}

// Active reports whether the lease still holds its address at now.
func (l Lease) Active(now time.Time) bool {
	return (l.State == StateBound || l.State == StateDeclined) && now.Unix() < l.Expires
}

type offer struct {
	mac   string
	until time.Time
}

// Leases is the dynamic lease database: in memory, with every change
// appended to a journal file and fsynced before the change is reported
// done, so an address acknowledged to a client is never handed to another
// after a crash or restart. Concurrent commits share one fsync (group
// commit). The journal is compacted by writing a fresh file (temp file,
// fsync, rename) at open and when it has grown.
type Leases struct {
	path string
	now  func() time.Time

	mu     sync.Mutex
	byIP   map[netip.Addr]*Lease
	byMAC  map[string]netip.Addr
	offers map[netip.Addr]offer
	cursor map[Range]uint32
	buf    bytes.Buffer
	seq    uint64
	lines  int

	syncMu  sync.Mutex
	synced  uint64
	syncErr error
	f       *os.File
}

// OpenLeases loads the journal at path (creating it), drops a torn last
// record a crash may have left, and rewrites it compacted. now is the
// clock (time.Now when nil).
func OpenLeases(path string, now func() time.Time) (*Leases, error) {
	if now == nil {
		now = time.Now
	}
	l := &Leases{path: path, now: now, byIP: map[netip.Addr]*Lease{}, byMAC: map[string]netip.Addr{},
		offers: map[netip.Addr]offer{}, cursor: map[Range]uint32{}}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lease dir: %w", err)
	}
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open lease journal: %w", err)
	default:
		err = l.load(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := l.compact(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Leases) load(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		var rec Lease
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || !rec.IP.Is4() {
			// A torn write at the end is expected after a crash: the
			// client was never acknowledged. Skip it and go on.
			continue
		}
		l.apply(rec)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read lease journal %s line %d: %w", l.path, line+1, err)
	}
	return nil
}

// apply records rec in memory; l.mu must be held (or l not shared yet).
func (l *Leases) apply(rec Lease) {
	if old, ok := l.byIP[rec.IP]; ok && old.MAC != "" && old.MAC != rec.MAC {
		if l.byMAC[old.MAC] == rec.IP {
			delete(l.byMAC, old.MAC)
		}
	}
	r := rec
	l.byIP[rec.IP] = &r
	if rec.MAC != "" {
		if prev, ok := l.byMAC[rec.MAC]; ok && prev != rec.IP {
			if p := l.byIP[prev]; p != nil && p.MAC == rec.MAC && p.State == StateBound {
				// A client holds one address per server: the new binding
				// replaces the old one.
				p.State = StateReleased
			}
		}
		l.byMAC[rec.MAC] = rec.IP
	}
}

// compact writes every known lease to a new journal atomically and
// reopens it for appending. Both locks must be held or l not shared yet.
func (l *Leases) compact() error {
	var b bytes.Buffer
	ips := make([]netip.Addr, 0, len(l.byIP))
	for ip := range l.byIP {
		ips = append(ips, ip)
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i].Less(ips[j]) })
	for _, ip := range ips {
		line, _ := json.Marshal(l.byIP[ip])
		b.Write(line)
		b.WriteByte('\n')
	}
	tmp := l.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write lease journal: %w", err)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("write lease journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync lease journal: %w", err)
	}
	f.Close()
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("replace lease journal: %w", err)
	}
	if d, err := os.Open(filepath.Dir(l.path)); err == nil {
		d.Sync()
		d.Close()
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f, err = os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open lease journal: %w", err)
	}
	l.lines = len(ips)
	return nil
}

// Close closes the journal.
func (l *Leases) Close() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// record applies rec and makes it durable before returning.
func (l *Leases) record(rec Lease) error {
	l.mu.Lock()
	l.apply(rec)
	line, _ := json.Marshal(rec)
	l.buf.Write(line)
	l.buf.WriteByte('\n')
	l.seq++
	mine := l.seq
	l.mu.Unlock()
	return l.sync(mine)
}

// sync makes every record up to seq durable. Whoever gets syncMu writes
// and fsyncs everything buffered so far, so concurrent commits share one
// fsync.
func (l *Leases) sync(seq uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.synced >= seq {
		return l.syncErr
	}
	if l.f == nil {
		return errors.New("lease journal is closed")
	}
	l.mu.Lock()
	data := append([]byte(nil), l.buf.Bytes()...)
	l.buf.Reset()
	upto := l.seq
	l.lines += bytes.Count(data, []byte{'\n'})
	grown := l.lines > 1000 && l.lines > 4*len(l.byIP)
	l.mu.Unlock()
	_, err := l.f.Write(data)
	if err == nil {
		err = l.f.Sync()
	}
	if err == nil && grown {
		l.mu.Lock()
		err = l.compact()
		l.mu.Unlock()
	}
	if err != nil {
		err = fmt.Errorf("lease journal %s: %w", l.path, err)
	}
	l.synced, l.syncErr = upto, err
	return err
}

// Range is an inclusive range of IPv4 addresses.
type Range struct {
	Start, End netip.Addr
}

// Contains reports whether ip lies in the range.
func (r Range) Contains(ip netip.Addr) bool {
	return ip.Is4() && r.Start.Compare(ip) <= 0 && ip.Compare(r.End) <= 0
}

func (r Range) size() uint32 { return u32(r.End) - u32(r.Start) + 1 }

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func fromU32(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// freeFor reports whether ip may be given to mac now; l.mu held.
func (l *Leases) freeFor(ip netip.Addr, mac string, now time.Time) bool {
	if o, ok := l.offers[ip]; ok && o.mac != mac && now.Before(o.until) {
		return false
	}
	le := l.byIP[ip]
	if le == nil {
		return true
	}
	if le.MAC == mac && le.State != StateDeclined {
		return true
	}
	return !le.Active(now)
}

// Allocate picks an address for mac from ranges and reserves it for ttl
// (an offer): the client's current or previous address if still free,
// else the requested one, else the first free address from a cursor that
// starts at a hash of the MAC. taken reports addresses reserved
// elsewhere (static hosts). It returns false when the pool is exhausted.
func (l *Leases) Allocate(mac string, ranges []Range, requested netip.Addr, taken func(netip.Addr) bool, ttl time.Duration) (netip.Addr, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := func(ip netip.Addr) bool {
		if !inRanges(ranges, ip) || (taken != nil && taken(ip)) {
			return false
		}
		return l.freeFor(ip, mac, now)
	}
	pick := netip.Addr{}
	if prev, has := l.byMAC[mac]; has && ok(prev) {
		pick = prev
	} else if requested.IsValid() && ok(requested) {
		pick = requested
	} else {
		// Pass 1 prefers addresses nobody ever had; pass 2 takes expired
		// or released ones.
		for pass := 0; pass < 2 && !pick.IsValid(); pass++ {
			for _, r := range ranges {
				n := r.size()
				start, seen := l.cursor[r]
				if !seen {
					h := fnv.New32a()
					h.Write([]byte(mac))
					start = h.Sum32() % n
				}
				for i := uint32(0); i < n; i++ {
					ip := fromU32(u32(r.Start) + (start+i)%n)
					if pass == 0 && l.byIP[ip] != nil {
						continue
					}
					if ok(ip) {
						pick = ip
						l.cursor[r] = (start + i + 1) % n
						break
					}
				}
				if pick.IsValid() {
					break
				}
			}
		}
	}
	if !pick.IsValid() {
		return pick, false
	}
	l.offers[pick] = offer{mac: mac, until: now.Add(ttl)}
	if len(l.offers) > 4096 {
		for ip, o := range l.offers {
			if now.After(o.until) {
				delete(l.offers, ip)
			}
		}
	}
	return pick, true
}

func inRanges(rs []Range, ip netip.Addr) bool {
	for _, r := range rs {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// CanBind reports whether mac may bind ip from ranges now (a REQUEST).
func (l *Leases) CanBind(mac string, ip netip.Addr, ranges []Range) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return inRanges(ranges, ip) && l.freeFor(ip, mac, now)
}

// Bind records a lease of ip to mac for d, durably.
func (l *Leases) Bind(mac string, ip netip.Addr, iface, hostname string, d time.Duration) (Lease, error) {
	rec := Lease{IP: ip, MAC: mac, Hostname: hostname, Interface: iface, Expires: l.now().Add(d).Unix(), State: StateBound}
	l.mu.Lock()
	delete(l.offers, ip)
	l.mu.Unlock()
	return rec, l.record(rec)
}

// Release ends mac's lease of ip (DHCPRELEASE). It reports whether there
// was such a lease.
func (l *Leases) Release(mac string, ip netip.Addr) (bool, error) {
	l.mu.Lock()
	le := l.byIP[ip]
	if le == nil || le.MAC != mac || le.State != StateBound {
		l.mu.Unlock()
		return false, nil
	}
	rec := *le
	l.mu.Unlock()
	rec.State = StateReleased
	rec.Expires = l.now().Unix()
	return true, l.record(rec)
}

// Decline takes ip out of the pool for a while: a client found it in use
// (DHCPDECLINE).
func (l *Leases) Decline(mac string, ip netip.Addr) error {
	l.mu.Lock()
	delete(l.offers, ip)
	l.mu.Unlock()
	return l.record(Lease{IP: ip, MAC: "", Hostname: "declined by " + mac, Expires: l.now().Add(declineHold).Unix(), State: StateDeclined})
}

// Unoffer drops an offer reservation (the client chose another server).
func (l *Leases) Unoffer(mac string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, o := range l.offers {
		if o.mac == mac {
			delete(l.offers, ip)
		}
	}
}

// List returns every lease record, by address.
func (l *Leases) List() []Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Lease, 0, len(l.byIP))
	for _, le := range l.byIP {
		out = append(out, *le)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// Lookup returns mac's current lease record, if any.
func (l *Leases) Lookup(mac string) (Lease, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ip, ok := l.byMAC[mac]
	if !ok {
		return Lease{}, false
	}
	return *l.byIP[ip], true
}
