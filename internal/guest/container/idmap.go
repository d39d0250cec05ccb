package container

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/berthhq/berth/internal/store"
)

// Subordinate id ranges: guest slot n owns host uids and gids
// IDMapFirst+n*IDMapSize … +IDMapSize-1, the layout of /etc/subuid's usual
// "root:100000:65536" repeated per guest, so no two containers share ids.
const (
	IDMapFirst = 100000
	IDMapSize  = 65536
	// maxSlots keeps every range below 2^32-1.
	maxSlots = (1<<32 - 1 - IDMapFirst) / IDMapSize
)

// IDMap is a guest's recorded id range.
type IDMap struct {
	Slot int `json:"slot"`
	Base int `json:"base"`
}

func idmapKey(id int) string    { return fmt.Sprintf("containers/idmap/guest/%09d", id) }
func idmapSlotKey(n int) string { return fmt.Sprintf("containers/idmap/slot/%07d", n) }
func slotBase(n int) int        { return IDMapFirst + n*IDMapSize }
func slotFromKey(k string) (int, error) {
	return strconv.Atoi(k[len("containers/idmap/slot/"):])
}

// allocIDMap reserves the lowest free slot for guest id and records it.
func (d *Driver) allocIDMap(ctx context.Context, id int) (IDMap, error) {
	if m, err := d.lookupIDMap(ctx, id); err == nil {
		return m, nil
	}
	for attempt := 0; attempt < 16; attempt++ {
		objs, err := d.o.Store.List(ctx, "containers/idmap/slot/")
		if err != nil {
			return IDMap{}, fmt.Errorf("list id ranges: %w", err)
		}
		used := make(map[int]bool, len(objs))
		for _, o := range objs {
			if n, err := slotFromKey(o.Key); err == nil {
				used[n] = true
			}
		}
		n := 0
		for used[n] {
			n++
		}
		if n >= maxSlots {
			return IDMap{}, errors.New("no free subordinate id range left")
		}
		_, err = store.PutJSON(ctx, d.o.Store, idmapSlotKey(n), id, store.Cond{Create: true})
		if errors.Is(err, store.ErrExists) {
			continue // taken concurrently
		}
		if err != nil {
			return IDMap{}, fmt.Errorf("reserve id range: %w", err)
		}
		m := IDMap{Slot: n, Base: slotBase(n)}
		if _, err := store.PutJSON(ctx, d.o.Store, idmapKey(id), m, store.Cond{Create: true}); err != nil {
			_ = d.o.Store.Delete(ctx, idmapSlotKey(n), store.Cond{})
			return IDMap{}, fmt.Errorf("record id range: %w", err)
		}
		return m, nil
	}
	return IDMap{}, errors.New("reserve id range: too much contention")
}

// lookupIDMap returns guest id's recorded range.
func (d *Driver) lookupIDMap(ctx context.Context, id int) (IDMap, error) {
	m, _, err := store.GetJSON[IDMap](ctx, d.o.Store, idmapKey(id))
	if err != nil {
		return IDMap{}, fmt.Errorf("id range of container %d: %w", id, err)
	}
	return m, nil
}

// releaseIDMap frees guest id's range; a guest without one is fine.
func (d *Driver) releaseIDMap(ctx context.Context, id int) error {
	m, err := d.lookupIDMap(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.o.Store.Delete(ctx, idmapSlotKey(m.Slot), store.Cond{}); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("release id range: %w", err)
	}
	if err := d.o.Store.Delete(ctx, idmapKey(id), store.Cond{}); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("release id range: %w", err)
	}
	return nil
}
