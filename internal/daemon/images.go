package daemon

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/store"
)

// ImageUser is implemented by guest drivers that need the image store
// (the container driver mounts image roots); the daemon hands it over
// once the store is open, before serving requests.
type ImageUser interface {
	SetImages(*image.Store)
}

// ImageNamer is implemented by guest drivers whose guests name images
// elsewhere than in the "image" option (VM and UML disks:
// diskN=image=NAME), so that those images count as in use.
type ImageNamer interface {
	ImagesOf(cfg api.Guest) []string
}

// openImages opens DATA/images, repairing interrupted imports, with
// removal refused while a guest uses the image: its config names it in the
// "image" option (containers) or its driver says so (ImageNamer).
func openImages(ctx context.Context, st store.Store, o Options, reg *guest.Registry, log *slog.Logger) (*image.Store, error) {
	users := func(withRoot bool) image.InUseFunc {
		return func(ctx context.Context, name string) ([]int, error) {
			gs, err := reg.List(ctx)
			if err != nil {
				return nil, err
			}
			var ids []int
			for _, g := range gs {
				uses := withRoot && g.Config["image"] == name
				if d, err := reg.Driver(g.Kind); err == nil {
					if n, ok := d.(ImageNamer); ok {
						uses = uses || slices.Contains(n.ImagesOf(g), name)
					}
				}
				if uses {
					ids = append(ids, g.ID)
				}
			}
			return ids, nil
		}
	}
	// Containers use the root only; VMs and UML guests the derived disks.
	imgs, err := image.Open(ctx, st, filepath.Join(o.DataDir, "images"), log.With("part", "images"),
		image.WithInUse(users(true)), image.WithDisksInUse(users(false)), image.WithDebootstrapCache(o.ImageCache))
	if err != nil {
		return nil, err
	}
	for _, d := range o.Drivers {
		if u, ok := d.(ImageUser); ok {
			u.SetImages(imgs)
		}
	}
	return imgs, nil
}
