package daemon

import (
	"context"
	"io"
	"log/slog"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/guest/container"
	"github.com/berthhq/berth/internal/store"
)

// withContainerDriver returns drivers plus berth's container driver on
// DataDir, unless drivers already has one for containers (tests pass
// fakes). A host where the driver cannot work (no cgroups) gets a warning
// and no container driver rather than no daemon.
func withContainerDriver(o Options, st store.Store, log *slog.Logger) []guest.Driver {
	for _, d := range o.Drivers {
		if d.Kind() == api.GuestContainer {
			return o.Drivers
		}
	}
	d, err := container.New(container.Options{DataDir: o.DataDir, Store: st, Log: log.With("area", "container")})
	if err != nil {
		log.Warn("containers are not available on this host", "err", err)
		return o.Drivers
	}
	log.Info("container driver ready", "cgroups", d.CgroupLayout())
	return append(append([]guest.Driver(nil), o.Drivers...), d)
}

// closeDrivers closes the drivers that hold something (the container
// driver's run directory, removed if no container runs) as the daemon
// stops.
func closeDrivers(ds []guest.Driver) {
	for _, d := range ds {
		if c, ok := d.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// adoptContainers re-attaches to containers that kept running while no
// daemon ran (they need no monitor process), and cleans up the runtime
// leftovers of those that stopped meanwhile.
func adoptContainers(ctx context.Context, reg *guest.Registry, log *slog.Logger) {
	d, err := reg.Driver(api.GuestContainer)
	if err != nil {
		return
	}
	gs, err := reg.List(ctx)
	if err != nil {
		log.Warn("adopt containers", "err", err)
		return
	}
	running := 0
	for _, g := range gs {
		if g.Kind != api.GuestContainer {
			continue
		}
		st, err := d.Adopt(ctx, g)
		if err != nil {
			log.Warn("adopt container", "guest", g.ID, "err", err)
			continue
		}
		if st.Status != api.GuestStopped {
			running++
		}
	}
	if running > 0 {
		log.Info("adopted running containers", "count", running)
	}
}
