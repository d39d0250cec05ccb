// Package image is berth's image store: root file systems imported from
// tarballs, directories or OCI archives, or built with debootstrap, kept
// once under DATA/images/NAME/rootfs and shared read-only by every guest made
// from them (containers use the rootfs as their overlayfs lower layer; disk
// images for VMs and UML guests are derived beside it). It records each
// image in the store last, after its files are complete, so a crash at any
// point leaves either a whole image or nothing that Open does not clean up.
// It does not run guests.
package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

// keyPrefix is where image records live in the store.
const keyPrefix = "images/"

// tmpPrefix starts the names of work directories under the image dir;
// Open removes any it finds, since they belong to interrupted work.
const tmpPrefix = ".tmp-"

// Logger receives progress lines for a task log; *task.Log satisfies it.
type Logger interface {
	Printf(format string, args ...any)
}

// InUseFunc returns the IDs of the guests that use the named image.
type InUseFunc func(ctx context.Context, name string) ([]int, error)

// Option configures a Store at Open.
type Option func(*Store)

// WithInUse sets the function Remove asks whether guests still use an
// image. Without it every image counts as unused.
func WithInUse(f InUseFunc) Option { return func(s *Store) { s.inUse = f } }

// WithDisksInUse sets the function MakeDisks asks which guests depend on
// an image's derived disks (VM overlays, UML COW files), so that it does
// not replace a disk under them. Without it every guest of WithInUse
// counts, containers included.
func WithDisksInUse(f InUseFunc) Option { return func(s *Store) { s.disksInUse = f } }

// WithDebootstrapCache makes Build keep debootstrap's downloaded packages in
// dir (one tarball per suite, variant, architecture and package list) and
// reuse them, so a rebuild needs no network. Empty disables the cache.
func WithDebootstrapCache(dir string) Option { return func(s *Store) { s.debCache = dir } }

// Store is the image store. It is safe for concurrent use.
type Store struct {
	st    store.Store
	dir   string
	log   *slog.Logger
	inUse InUseFunc
	// disksInUse is inUse for the derived disks only (WithDisksInUse).
	disksInUse InUseFunc
	debCache   string

	mu   sync.Mutex
	busy map[string]bool // names being imported, built or removed
}

// InvalidError is a validation error with per-field messages; the API turns
// it into a 400.
type InvalidError struct {
	Msg    string
	Fields map[string]string
}

func (e *InvalidError) Error() string {
	keys := slices.Sorted(maps.Keys(e.Fields))
	s := e.Msg
	for _, k := range keys {
		s += "; " + k + ": " + e.Fields[k]
	}
	return s
}

// FieldErrors returns the per-field messages.
func (e *InvalidError) FieldErrors() map[string]string { return e.Fields }

func invalid(field, msg string) error {
	return &InvalidError{Msg: "invalid image request", Fields: map[string]string{field: msg}}
}

// InUseError refuses to remove an image that guests use (409).
type InUseError struct {
	Name   string
	Guests []int
	// Detail says what was refused and what to do; empty means removal.
	Detail string
}

func (e *InUseError) Error() string {
	ids := make([]string, len(e.Guests))
	for i, g := range e.Guests {
		ids[i] = fmt.Sprint(g)
	}
	detail := e.Detail
	if detail == "" {
		detail = "destroy them or change their image first"
	}
	return fmt.Sprintf("image %q is used by guest(s) %s: %s", e.Name, strings.Join(ids, ", "), detail)
}

// StatusCode makes the API answer 409.
func (e *InUseError) StatusCode() (int, string) { return 409, "in_use" }

// BusyError refuses to touch an image another task is working on (409).
type BusyError struct{ Name string }

func (e *BusyError) Error() string {
	return fmt.Sprintf("image %q is being imported, built or removed by another task: wait for it (berth task list --running)", e.Name)
}

// StatusCode makes the API answer 409.
func (e *BusyError) StatusCode() (int, string) { return 409, "busy" }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName checks an image name: letters, digits, '.', '_' and '-',
// starting with a letter or digit, at most 64 characters.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return invalid("name", fmt.Sprintf("%q is not a valid image name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name))
	}
	return nil
}

// Open opens the image store whose files live in dir (DATA/images) and
// whose records live in st. It repairs what an interrupted import, build or
// removal left behind: work directories (.tmp-*) are deleted, and so is an
// image directory without a store record (the record is written last, so
// such a directory is an import that never completed). A record whose
// directory is missing is kept and logged: guests may name it, and an
// administrator has to decide.
func Open(ctx context.Context, st store.Store, dir string, log *slog.Logger, opts ...Option) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{st: st, dir: dir, log: log, busy: map[string]bool{}}
	for _, o := range opts {
		o(s)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("create image dir: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, fmt.Errorf("image dir: %w", err)
	}
	recs, err := store.ListJSON[record](ctx, st, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	known := map[string]bool{}
	for _, r := range recs {
		known[r.Name] = true
		if _, err := os.Lstat(filepath.Join(dir, r.Name, "rootfs")); err != nil {
			log.Warn("image record without its files: remove it with 'berth image remove' and import it again", "image", r.Name, "err", err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read image dir: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, tmpPrefix):
			log.Info("removing work directory of an interrupted image task", "dir", n)
			if k := killUnder(filepath.Join(dir, n)); k > 0 {
				log.Warn("killed processes an interrupted image build left running", "dir", n, "count", k)
			}
		case !known[n]:
			log.Warn("removing image directory without a store record (an import that did not complete)", "dir", n)
		default:
			// Work files of an interrupted disk build inside the image.
			if sub, err := os.ReadDir(filepath.Join(dir, n)); err == nil {
				for _, e := range sub {
					if strings.HasPrefix(e.Name(), tmpPrefix) {
						log.Info("removing work directory of an interrupted disk build", "image", n, "dir", e.Name())
						if err := removeTree(filepath.Join(dir, n, e.Name())); err != nil {
							return nil, fmt.Errorf("repair image dir: %w", err)
						}
					}
				}
			}
			continue
		}
		if err := removeTree(filepath.Join(dir, n)); err != nil {
			return nil, fmt.Errorf("repair image dir: %w", err)
		}
	}
	return s, nil
}

// record is what the store holds per image: the wire type without the
// paths, which follow from the data dir.
type record struct {
	api.Image
}

func (s *Store) key(name string) string { return keyPrefix + name }

func (s *Store) fill(img api.Image) api.Image {
	img.Paths = map[string]string{}
	for _, f := range img.Formats {
		img.Paths[f] = s.formatPath(img.Name, f)
	}
	return img
}

func (s *Store) formatPath(name, format string) string {
	file := map[string]string{api.ImageFormatRootFS: "rootfs", api.ImageFormatExt4: "root.ext4",
		api.ImageFormatRaw: "disk.raw", api.ImageFormatQcow2: "disk.qcow2"}[format]
	return filepath.Join(s.dir, name, file)
}

// Get returns one image; a missing one is store.ErrNotFound, wrapped.
func (s *Store) Get(ctx context.Context, name string) (api.Image, error) {
	if err := ValidName(name); err != nil {
		return api.Image{}, err
	}
	r, _, err := store.GetJSON[record](ctx, s.st, s.key(name))
	if errors.Is(err, store.ErrNotFound) {
		return api.Image{}, fmt.Errorf("image %q: %w (see 'berth image list')", name, store.ErrNotFound)
	}
	if err != nil {
		return api.Image{}, fmt.Errorf("image %q: %w", name, err)
	}
	return s.fill(r.Image), nil
}

// List returns every image, sorted by name.
func (s *Store) List(ctx context.Context) ([]api.Image, error) {
	recs, err := store.ListJSON[record](ctx, s.st, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]api.Image, 0, len(recs))
	for _, r := range recs {
		out = append(out, s.fill(r.Image))
	}
	slices.SortFunc(out, func(a, b api.Image) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RootFS returns the absolute path of the image's unpacked root directory,
// for use as an overlayfs lower directory. berth never writes it after the
// import; callers must not either. It checks the directory exists but not
// the store record (it is called on hot paths such as container start).
func (s *Store) RootFS(name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	p := s.formatPath(name, api.ImageFormatRootFS)
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("image %q: %w (see 'berth image list')", name, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("image %q: %w", name, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("image %q: %s is not a directory", name, p)
	}
	return p, nil
}

// Path returns the absolute path of one format of an image, or an error if
// the image lacks it.
func (s *Store) Path(ctx context.Context, name, format string) (string, error) {
	img, err := s.Get(ctx, name)
	if err != nil {
		return "", err
	}
	if !slices.Contains(img.Formats, format) {
		return "", fmt.Errorf("image %q has no %s format (it has %s): build it with 'berth image disk %s --format %s'",
			name, format, strings.Join(img.Formats, ", "), name, format)
	}
	return img.Paths[format], nil
}

// GrantRead lets members of group gid read one derived disk of an image,
// for guests that run as an unprivileged user (UML kernels run as
// berth-uml): the image directory becomes searchable by the group (0710)
// and the file group-readable (0440). Contents and modification times stay
// as they are, so COW files over the disk remain valid. The root directory
// and the other files stay root's.
func (s *Store) GrantRead(ctx context.Context, name, format string, gid int) error {
	if format == api.ImageFormatRootFS {
		return invalid("format", "the rootfs directory is not shared this way")
	}
	p, err := s.Path(ctx, name, format)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Join(s.dir, name), 0o710}, {p, 0o440}} {
		if err := os.Chown(f.path, -1, gid); err != nil {
			return fmt.Errorf("image %q: share %s with group %d: %w", name, f.path, gid, err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			return fmt.Errorf("image %q: share %s with group %d: %w", name, f.path, gid, err)
		}
	}
	return nil
}

// reserve marks name busy for the caller until release is called.
func (s *Store) reserve(name string) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[name] {
		return nil, &BusyError{Name: name}
	}
	s.busy[name] = true
	return func() {
		s.mu.Lock()
		delete(s.busy, name)
		s.mu.Unlock()
	}, nil
}

// CheckNew validates a new image's name and refuses one that exists, so
// the API can answer before starting a task.
func (s *Store) CheckNew(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if _, err := s.st.Get(ctx, s.key(name)); err == nil {
		return fmt.Errorf("image %q: %w (remove it first or choose another name)", name, store.ErrExists)
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[name] {
		return &BusyError{Name: name}
	}
	return nil
}

// CheckRemove tells whether Remove would refuse: the image does not exist
// (ErrNotFound), or guests use it (InUseError), or a task works on it.
func (s *Store) CheckRemove(ctx context.Context, name string) error {
	if _, err := s.Get(ctx, name); err != nil {
		return err
	}
	s.mu.Lock()
	busy := s.busy[name]
	s.mu.Unlock()
	if busy {
		return &BusyError{Name: name}
	}
	return s.checkInUse(ctx, name)
}

func (s *Store) checkInUse(ctx context.Context, name string) error {
	return s.checkUsers(ctx, name, s.inUse)
}

// checkDisksInUse refuses when guests depend on the image's derived disks.
func (s *Store) checkDisksInUse(ctx context.Context, name string) error {
	if s.disksInUse != nil {
		return s.checkUsers(ctx, name, s.disksInUse)
	}
	return s.checkInUse(ctx, name)
}

func (s *Store) checkUsers(ctx context.Context, name string, inUse InUseFunc) error {
	if inUse == nil {
		return nil
	}
	ids, err := inUse(ctx, name)
	if err != nil {
		return fmt.Errorf("image %q: find guests using it: %w", name, err)
	}
	if len(ids) > 0 {
		return &InUseError{Name: name, Guests: ids}
	}
	return nil
}

// Remove deletes an image and its files. It refuses (InUseError, 409) while
// any guest uses it. The record goes first, then the files: a crash in
// between leaves a directory without a record, which Open removes.
func (s *Store) Remove(ctx context.Context, name string) error {
	if _, err := s.Get(ctx, name); err != nil {
		return err
	}
	release, err := s.reserve(name)
	if err != nil {
		return err
	}
	defer release()
	if err := s.checkInUse(ctx, name); err != nil {
		return err
	}
	if err := s.st.Delete(ctx, s.key(name), store.Cond{}); err != nil {
		return fmt.Errorf("image %q: %w", name, err)
	}
	dir := filepath.Join(s.dir, name)
	gone := filepath.Join(s.dir, tmpPrefix+"rm-"+name)
	if err := os.Rename(dir, gone); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("image %q: move files aside: %w", name, err)
	}
	if err := removeTree(gone); err != nil {
		return fmt.Errorf("image %q: remove files: %w", name, err)
	}
	s.log.Info("image removed", "image", name)
	return nil
}

// removeTree deletes a tree, first making its directories writable (an
// image root may hold read-only directories).
func removeTree(p string) error {
	// A loop mount of a disk being built may be left by a crash: detach
	// it first so that its content is not deleted through it.
	// Mounts under the tree (a disk build's loop mount, the /proc and /sys
	// debootstrap mounts in its target) are detached first, so that
	// nothing is deleted through them.
	for _, m := range mountsUnder(p) {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	err := os.RemoveAll(p)
	if err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	return parseMountsUnder(string(b), dir)
}

// parseMountsUnder reads mountinfo(5) text and returns the mount points at
// or below dir, deepest first.
func parseMountsUnder(mountinfo, dir string) []string {
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// killUnder kills (SIGKILL) the processes whose root directory or working
// directory lies inside dir: what an interrupted build left running in its
// chroot. It returns how many it killed.
func killUnder(dir string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		for _, l := range []string{"root", "cwd"} {
			t, err := os.Readlink(filepath.Join("/proc", e.Name(), l))
			if err == nil && (t == dir || strings.HasPrefix(t, dir+"/")) {
				if unix.Kill(pid, unix.SIGKILL) == nil {
					n++
				}
				break
			}
		}
	}
	return n
}
