package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

// record is what the store holds for a guest: api.Guest without the fields
// that are not configuration (Status, Digest). Keeping it separate means
// the wire type can grow without changing the stored format.
type record struct {
	ID      int               `json:"id"`
	Kind    api.GuestKind     `json:"kind"`
	Name    string            `json:"name,omitempty"`
	OnBoot  bool              `json:"onboot,omitempty"`
	Startup api.Startup       `json:"startup,omitzero"`
	Config  map[string]string `json:"config,omitempty"`
}

func toRecord(g api.Guest) record {
	r := record{ID: g.ID, Kind: g.Kind, Name: g.Name, OnBoot: g.OnBoot, Startup: g.Startup}
	if len(g.Config) > 0 {
		r.Config = maps.Clone(g.Config)
	}
	return r
}

func (r record) guest(digest string) api.Guest {
	return api.Guest{ID: r.ID, Kind: r.Kind, Name: r.Name, OnBoot: r.OnBoot,
		Startup: r.Startup, Config: maps.Clone(r.Config), Digest: digest}
}

// Registry is the set of guests configured on this node, kept in the store
// under "guests/<9-digit id>", together with the drivers that run them. It
// is safe for concurrent use; it holds no state besides the store and the
// driver table. It does not serialise operations on one guest beyond the
// digest checks; that is the task layer's job.
type Registry struct {
	st      store.Store
	drivers map[api.GuestKind]Driver
}

// NewRegistry returns a registry over st with the given drivers. It panics
// if a driver is nil or two drivers claim the same kind, which are wiring
// mistakes.
func NewRegistry(st store.Store, drivers ...Driver) *Registry {
	r := &Registry{st: st, drivers: make(map[api.GuestKind]Driver, len(drivers))}
	for _, d := range drivers {
		if d == nil {
			panic("guest.NewRegistry: nil driver")
		}
		if _, dup := r.drivers[d.Kind()]; dup {
			panic(fmt.Sprintf("guest.NewRegistry: two drivers for kind %q", d.Kind()))
		}
		r.drivers[d.Kind()] = d
	}
	return r
}

// Kinds returns the guest kinds this registry has drivers for, sorted.
func (r *Registry) Kinds() []api.GuestKind {
	return slices.Sorted(maps.Keys(r.drivers))
}

// Driver returns the driver for kind, or an error naming the kinds that are
// available.
func (r *Registry) Driver(kind api.GuestKind) (Driver, error) {
	if d, ok := r.drivers[kind]; ok {
		return d, nil
	}
	return nil, errors.New(r.noDriver(kind))
}

func (r *Registry) noDriver(kind api.GuestKind) string {
	have := make([]string, 0, len(r.drivers))
	for _, k := range r.Kinds() {
		have = append(have, string(k))
	}
	avail := strings.Join(have, ", ")
	if avail == "" {
		avail = "none"
	}
	return fmt.Sprintf("no driver for guest kind %q on this node (available: %s)", kind, avail)
}

var (
	// nameRE is a DNS name: dot-separated labels of letters, digits and
	// inner hyphens.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	// configKeyRE is a driver option name such as "memory" or "net0".
	configKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
)

// validate checks g against the common schema and its driver and returns a
// *ValidationError, or nil. The ID is not checked here; callers do that
// first because a bad ID makes the rest moot for updates.
func (r *Registry) validate(g api.Guest) error {
	fields := map[string]string{}
	if g.Name != "" && (len(g.Name) > 253 || !nameRE.MatchString(g.Name)) {
		fields["name"] = fmt.Sprintf("%q is not a valid DNS name", g.Name)
	}
	if msg := checkStartup(g.Startup, false); msg != "" {
		fields["startup"] = msg
	}
	for k := range g.Config {
		if !configKeyRE.MatchString(k) {
			fields[k] = "option names are a lowercase letter followed by up to 63 lowercase letters, digits, '_' or '-'"
		}
	}
	d, ok := r.drivers[g.Kind]
	if !ok {
		fields["kind"] = r.noDriver(g.Kind)
	} else {
		for k, v := range d.Validate(g) {
			if _, dup := fields[k]; !dup {
				fields[k] = v
			}
		}
	}
	if len(fields) > 0 {
		return &ValidationError{Fields: fields}
	}
	return nil
}

// Create registers a new guest and returns it with its digest. It checks
// the ID range, that a driver exists for g.Kind, the common fields and the
// driver's Validate, and fails with an error wrapping store.ErrExists if
// the ID is taken. Status and Digest of g are ignored.
//
// Create only writes the configuration; the caller then runs the driver's
// Create (and calls Remove if that fails).
func (r *Registry) Create(ctx context.Context, g api.Guest) (api.Guest, error) {
	if err := ValidateID(g.ID); err != nil {
		return api.Guest{}, &ValidationError{Fields: map[string]string{"id": err.Error()}}
	}
	if err := r.validate(g); err != nil {
		return api.Guest{}, err
	}
	rec := toRecord(g)
	digest, err := store.PutJSON(ctx, r.st, key(g.ID), rec, store.Cond{Create: true})
	if errors.Is(err, store.ErrExists) {
		return api.Guest{}, wrapf(err, "guest %d already exists", g.ID)
	}
	if err != nil {
		return api.Guest{}, fmt.Errorf("create guest %d: %w", g.ID, err)
	}
	return rec.guest(digest), nil
}

// Get returns guest id's configuration with its digest, or an error
// wrapping store.ErrNotFound. Status is left empty; see Status.
func (r *Registry) Get(ctx context.Context, id int) (api.Guest, error) {
	if err := ValidateID(id); err != nil {
		return api.Guest{}, wrapf(store.ErrNotFound, "guest %d does not exist: %v", id, err)
	}
	rec, digest, err := store.GetJSON[record](ctx, r.st, key(id))
	if errors.Is(err, store.ErrNotFound) {
		return api.Guest{}, wrapf(err, "guest %d does not exist", id)
	}
	if err != nil {
		return api.Guest{}, fmt.Errorf("read guest %d: %w", id, err)
	}
	return rec.guest(digest), nil
}

// List returns every guest's configuration with its digest, by ascending
// ID. Status is left empty; see FillStatus.
func (r *Registry) List(ctx context.Context) ([]api.Guest, error) {
	objs, err := r.st.List(ctx, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("list guests: %w", err)
	}
	out := make([]api.Guest, 0, len(objs))
	for _, o := range objs {
		id, err := idFromKey(o.Key)
		if err != nil {
			return nil, fmt.Errorf("list guests: %w", err)
		}
		var rec record
		if err := json.Unmarshal(o.Value, &rec); err != nil {
			return nil, fmt.Errorf("list guests: decode %s: %w", o.Key, err)
		}
		if rec.ID != id {
			return nil, fmt.Errorf("list guests: %s holds guest ID %d", o.Key, rec.ID)
		}
		out = append(out, rec.guest(o.Digest))
	}
	return out, nil
}

// Update applies u to guest id and returns the new configuration. If
// u.Digest is set and differs from the stored digest, or the guest changes
// between read and write, it fails with an error wrapping
// store.ErrConflict. An invalid result is a *ValidationError and nothing is
// written.
//
// Without u.Digest, a concurrent change between read and write is retried
// a few times, since the caller did not ask to build on a specific version.
func (r *Registry) Update(ctx context.Context, id int, u api.GuestConfigUpdate) (api.Guest, error) {
	for attempt := 1; ; attempt++ {
		g, err := r.update(ctx, id, u)
		if u.Digest == "" && attempt < 3 && errors.Is(err, store.ErrConflict) {
			continue
		}
		return g, err
	}
}

func (r *Registry) update(ctx context.Context, id int, u api.GuestConfigUpdate) (api.Guest, error) {
	cur, err := r.Get(ctx, id)
	if err != nil {
		return api.Guest{}, err
	}
	if u.Digest != "" && u.Digest != cur.Digest {
		return api.Guest{}, conflict(id)
	}
	fields := map[string]string{}
	for _, k := range u.Delete {
		if _, both := u.Config[k]; both {
			fields[k] = "option is both set and deleted"
		}
	}
	if len(fields) > 0 {
		return api.Guest{}, &ValidationError{Fields: fields}
	}
	next := cur
	next.Config = maps.Clone(cur.Config)
	if next.Config == nil {
		next.Config = map[string]string{}
	}
	if u.Name != nil {
		next.Name = *u.Name
	}
	if u.OnBoot != nil {
		next.OnBoot = *u.OnBoot
	}
	if u.Startup != nil {
		next.Startup = *u.Startup
	}
	maps.Copy(next.Config, u.Config)
	for _, k := range u.Delete {
		delete(next.Config, k)
	}
	if err := r.validate(next); err != nil {
		return api.Guest{}, err
	}
	rec := toRecord(next)
	digest, err := store.PutJSON(ctx, r.st, key(id), rec, store.Cond{Digest: cur.Digest})
	switch {
	case errors.Is(err, store.ErrConflict):
		return api.Guest{}, conflict(id)
	case errors.Is(err, store.ErrNotFound):
		return api.Guest{}, wrapf(err, "guest %d was removed while being updated", id)
	case err != nil:
		return api.Guest{}, fmt.Errorf("update guest %d: %w", id, err)
	}
	return rec.guest(digest), nil
}

func conflict(id int) error {
	return wrapf(store.ErrConflict, "guest %d was changed by someone else since it was read (digest mismatch): reload it and retry", id)
}

// Remove deletes guest id's configuration. A non-empty digest must match
// the stored one (else an error wrapping store.ErrConflict); a missing
// guest is an error wrapping store.ErrNotFound.
//
// Remove does not ask the driver anything: the caller stops the guest and
// runs the driver's Destroy first.
func (r *Registry) Remove(ctx context.Context, id int, digest string) error {
	if err := ValidateID(id); err != nil {
		return wrapf(store.ErrNotFound, "guest %d does not exist: %v", id, err)
	}
	err := r.st.Delete(ctx, key(id), store.Cond{Digest: digest})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return wrapf(err, "guest %d does not exist", id)
	case errors.Is(err, store.ErrConflict):
		return conflict(id)
	case err != nil:
		return fmt.Errorf("remove guest %d: %w", id, err)
	}
	return nil
}

// Status asks g's driver for its runtime state.
func (r *Registry) Status(ctx context.Context, g api.Guest) (State, error) {
	d, err := r.Driver(g.Kind)
	if err != nil {
		return State{}, fmt.Errorf("status of guest %d: %w", g.ID, err)
	}
	s, err := d.Status(ctx, g)
	if err != nil {
		return State{}, fmt.Errorf("status of %s %d: %w", kindLabel(g.Kind), g.ID, err)
	}
	return s, nil
}

// FillStatus sets Status on each of gs from its driver, one guest after the
// other; a guest whose status cannot be read gets api.GuestUnknown.
func (r *Registry) FillStatus(ctx context.Context, gs []api.Guest) {
	for i := range gs {
		s, err := r.Status(ctx, gs[i])
		if err != nil || s.Status == "" {
			gs[i].Status = api.GuestUnknown
			continue
		}
		gs[i].Status = s.Status
	}
}
