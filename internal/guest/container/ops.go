package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/atomicfile"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/store"
)

// SetImages hands the driver the node's image store; the daemon calls it
// once before serving requests.
func (d *Driver) SetImages(s *image.Store) { d.o.Images = s }

// Suspend freezes every process of the container (cgroup freezer).
func (d *Driver) Suspend(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	defer d.lock(cfg.ID)()
	if _, ok := d.running(cfg.ID); !ok {
		return fmt.Errorf("container %d is not running", cfg.ID)
	}
	g, err := d.cg.Open(cgroupName(cfg.ID))
	if err != nil {
		return err
	}
	if err := g.Freeze(true); err != nil {
		return err
	}
	log.Printf("container %d suspended (all processes frozen)", cfg.ID)
	return nil
}

// Resume thaws a suspended container.
func (d *Driver) Resume(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	defer d.lock(cfg.ID)()
	if _, ok := d.running(cfg.ID); !ok {
		return fmt.Errorf("container %d is not running", cfg.ID)
	}
	g, err := d.cg.Open(cgroupName(cfg.ID))
	if err != nil {
		return err
	}
	if err := g.Freeze(false); err != nil {
		return err
	}
	log.Printf("container %d resumed", cfg.ID)
	return nil
}

// Reboot shuts the container down cleanly (hard stop after timeout) and
// starts it again. A stopped container is just started.
func (d *Driver) Reboot(ctx context.Context, cfg api.Guest, timeout time.Duration, log guest.Logger) error {
	defer d.lock(cfg.ID)()
	if err := d.shutdown(ctx, cfg.ID, timeout, log); err != nil {
		return err
	}
	return d.start(ctx, cfg, log)
}

var snapNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,39}$`)

// ValidSnapshotName checks a snapshot name as Proxmox does: a letter,
// then up to 39 letters, digits, '_' or '-'.
func ValidSnapshotName(name string) error {
	if !snapNameRE.MatchString(name) || name == "current" {
		return &guest.ValidationError{Fields: map[string]string{"name": fmt.Sprintf("%q is not a valid snapshot name: a letter, then up to 39 letters, digits, '_' or '-' (not \"current\")", name)}}
	}
	return nil
}

type snapMeta struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Created     int64  `json:"created"`
}

// Snapshots lists guest id's snapshots, oldest first.
func (d *Driver) Snapshots(id int) ([]api.ContainerSnapshot, error) {
	ents, err := os.ReadDir(d.snapshotDir(id))
	if errors.Is(err, os.ErrNotExist) {
		return []api.ContainerSnapshot{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []api.ContainerSnapshot{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.snapshotDir(id), e.Name(), "meta.json"))
		if err != nil {
			continue
		}
		var m snapMeta
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		out = append(out, api.ContainerSnapshot{Name: m.Name, Description: m.Description, Created: m.Created})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created < out[j].Created })
	return out, nil
}

// copyLayer copies a writable layer with cp -a (ownership, modes,
// overlayfs xattrs and whiteouts), sharing blocks where the file system
// can (--reflink=auto).
func copyLayer(ctx context.Context, src, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s: %v: %s", src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// frozen runs fn with the container frozen if it is running, so that the
// copy of its layer is consistent.
func (d *Driver) frozen(id int, log guest.Logger, fn func() error) error {
	if _, ok := d.running(id); !ok {
		return fn()
	}
	g, err := d.cg.Open(cgroupName(id))
	if err != nil {
		return err
	}
	was, _ := g.Frozen()
	if !was {
		log.Printf("freezing container %d while its layer is copied", id)
		if err := g.Freeze(true); err != nil {
			return err
		}
		defer func() { _ = g.Freeze(false) }()
	}
	return fn()
}

// Snapshot copies the writable layer (only it: the image is shared) to
// snapshots/NAME. A running container is frozen during the copy.
func (d *Driver) Snapshot(ctx context.Context, cfg api.Guest, name, description string, log guest.Logger) error {
	if err := ValidSnapshotName(name); err != nil {
		return err
	}
	defer d.lock(cfg.ID)()
	final := filepath.Join(d.snapshotDir(cfg.ID), name)
	if _, err := os.Stat(final); err == nil {
		return fmt.Errorf("snapshot %q of container %d: %w", name, cfg.ID, store.ErrExists)
	}
	if err := os.MkdirAll(d.snapshotDir(cfg.ID), 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(d.snapshotDir(cfg.ID), ".tmp-"+name)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	err = d.frozen(cfg.ID, log, func() error { return copyLayer(ctx, d.upper(cfg.ID), filepath.Join(tmp, "upper")) })
	if err != nil {
		return err
	}
	b, _ := json.Marshal(snapMeta{Name: name, Description: description, Created: time.Now().Unix()})
	if err := atomicfile.WriteFile(filepath.Join(tmp, "meta.json"), b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("snapshot %q: %w", name, err)
	}
	log.Printf("snapshot %q of container %d created", name, cfg.ID)
	return nil
}

// Rollback replaces the writable layer of a stopped container with the
// snapshot's copy.
func (d *Driver) Rollback(ctx context.Context, cfg api.Guest, name string, log guest.Logger) error {
	if err := ValidSnapshotName(name); err != nil {
		return err
	}
	defer d.lock(cfg.ID)()
	if _, ok := d.running(cfg.ID); ok {
		return fmt.Errorf("container %d is running: stop it before a rollback", cfg.ID)
	}
	snap := filepath.Join(d.snapshotDir(cfg.ID), name, "upper")
	if _, err := os.Stat(snap); err != nil {
		return fmt.Errorf("snapshot %q of container %d: %w", name, cfg.ID, store.ErrNotFound)
	}
	// The kept overlayfs of the old layer must not outlive it.
	d.dropRoot(cfg.ID)
	next := d.upper(cfg.ID) + ".rollback"
	_ = os.RemoveAll(next)
	if err := copyLayer(ctx, snap, next); err != nil {
		_ = os.RemoveAll(next)
		return err
	}
	old := d.upper(cfg.ID) + ".old"
	_ = os.RemoveAll(old)
	if err := os.Rename(d.upper(cfg.ID), old); err != nil {
		return err
	}
	if err := os.Rename(next, d.upper(cfg.ID)); err != nil {
		_ = os.Rename(old, d.upper(cfg.ID))
		return err
	}
	_ = os.RemoveAll(old)
	// overlayfs's work dir must start empty with a new upper.
	if err := emptyDir(d.work(cfg.ID)); err != nil {
		return err
	}
	log.Printf("container %d rolled back to snapshot %q", cfg.ID, name)
	return nil
}

// DeleteSnapshot removes a snapshot.
func (d *Driver) DeleteSnapshot(ctx context.Context, cfg api.Guest, name string, log guest.Logger) error {
	if err := ValidSnapshotName(name); err != nil {
		return err
	}
	defer d.lock(cfg.ID)()
	p := filepath.Join(d.snapshotDir(cfg.ID), name)
	if _, err := os.Stat(p); err != nil {
		return fmt.Errorf("snapshot %q of container %d: %w", name, cfg.ID, store.ErrNotFound)
	}
	tmp := filepath.Join(d.snapshotDir(cfg.ID), ".del-"+name)
	if err := os.Rename(p, tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	log.Printf("snapshot %q of container %d deleted", name, cfg.ID)
	return nil
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// Clone gives the registered (new, stopped) guest dst a copy of src's
// writable layer, shifted from src's id range to a freshly allocated one.
// The image is shared, so this copies only what src changed. A running
// src is frozen during the copy.
func (d *Driver) Clone(ctx context.Context, src, dst api.Guest, log guest.Logger) (err error) {
	if src.ID == dst.ID {
		return errors.New("clone: the new ID is the source's")
	}
	ss, err := d.settingsOf(src)
	if err != nil {
		return err
	}
	ds, err := d.settingsOf(dst)
	if err != nil {
		return err
	}
	unlock := d.lock(src.ID)
	defer unlock()
	if _, err := os.Stat(d.gdir(dst.ID)); err == nil {
		return fmt.Errorf("container %d already has a directory %s", dst.ID, d.gdir(dst.ID))
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(d.gdir(dst.ID))
			_ = d.releaseIDMap(context.WithoutCancel(ctx), dst.ID)
		}
	}()
	oldBase, newBase := 0, 0
	if !ss.Privileged {
		m, err := d.lookupIDMap(ctx, src.ID)
		if err != nil {
			return err
		}
		oldBase = m.Base
	}
	if !ds.Privileged {
		m, err := d.allocIDMap(ctx, dst.ID)
		if err != nil {
			return err
		}
		newBase = m.Base
	}
	if err := d.makeLayer(dst.ID, newBase); err != nil {
		return err
	}
	if err := os.Remove(d.upper(dst.ID)); err != nil {
		return err
	}
	err = d.frozen(src.ID, log, func() error { return copyLayer(ctx, d.upper(src.ID), d.upper(dst.ID)) })
	if err != nil {
		return err
	}
	if oldBase != newBase {
		n, err := shiftIDs(d.upper(dst.ID), oldBase, newBase)
		if err != nil {
			return err
		}
		log.Printf("shifted %d files from ids %d+ to %d+", n, oldBase, newBase)
	}
	log.Printf("container %d cloned to %d (writable layer copied, image %s shared)", src.ID, dst.ID, ds.Image)
	return nil
}

// shiftIDs moves the owners of every file under root from the range at
// oldBase to the one at newBase (IDMapSize ids each); owners outside the
// old range are left alone.
func shiftIDs(root string, oldBase, newBase int) (int, error) {
	n := 0
	shift := func(id int) int {
		if id >= oldBase && id < oldBase+IDMapSize {
			return id - oldBase + newBase
		}
		return id
	}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		uid, gid := shift(int(st.Uid)), shift(int(st.Gid))
		if uid == int(st.Uid) && gid == int(st.Gid) {
			return nil
		}
		mode := fi.Mode()
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("shift owner of %s: %w", p, err)
		}
		// chown clears set-id bits; restore them.
		if mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 && mode&fs.ModeSymlink == 0 {
			if err := os.Chmod(p, mode); err != nil {
				return err
			}
		}
		n++
		return nil
	})
	return n, err
}
