package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/guest/qemu"
	"github.com/berthhq/berth/internal/guest/uml"
)

// withVMDrivers adds the QEMU and UML drivers, keeping VMs in
// DATA/vms/<id> and UML guests in DATA/uml/<id>, unless Options already
// brings drivers of those kinds (tests do).
func withVMDrivers(o Options, drivers []guest.Driver, log *slog.Logger) []guest.Driver {
	have := map[api.GuestKind]bool{}
	for _, d := range drivers {
		have[d.Kind()] = true
	}
	out := append([]guest.Driver(nil), drivers...)
	if !have[api.GuestVM] {
		out = append(out, qemu.New(filepath.Join(o.DataDir, "vms"), log.With("area", "vm")))
	}
	if !have[api.GuestUML] {
		exe, err := os.Executable()
		if err != nil {
			log.Warn("UML guests are not available: cannot find the berth binary for the console relay", "err", err)
			return out
		}
		out = append(out, uml.New(filepath.Join(o.DataDir, "uml"), []string{exe, uml.RelayCommand}, log.With("area", "uml")))
	}
	return out
}

// adoptVMs re-attaches to VMs and UML guests that kept running while no
// daemon ran (their QEMU and UML processes are independent of it) and
// clears the taps and sockets of those that stopped meanwhile.
func adoptVMs(ctx context.Context, reg *guest.Registry, log *slog.Logger) {
	gs, err := reg.List(ctx)
	if err != nil {
		log.Warn("adopt VMs and UML guests", "err", err)
		return
	}
	running := map[api.GuestKind]int{}
	for _, g := range gs {
		if g.Kind != api.GuestVM && g.Kind != api.GuestUML {
			continue
		}
		d, err := reg.Driver(g.Kind)
		if err != nil {
			continue
		}
		st, err := d.Adopt(ctx, g)
		if err != nil {
			log.Warn("adopt guest", "guest", g.ID, "kind", g.Kind, "err", err)
			continue
		}
		if st.Status != api.GuestStopped {
			running[g.Kind]++
		}
	}
	if running[api.GuestVM]+running[api.GuestUML] > 0 {
		log.Info("adopted running guests", "vms", running[api.GuestVM], "uml", running[api.GuestUML])
	}
}
