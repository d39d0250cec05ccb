// Package container is berth's system-container driver (guest kind
// "container"): unprivileged by default (a user namespace whose root is a
// per-guest subordinate id range), with an overlayfs root whose lower layer
// is the image's shared read-only rootfs, id-mapped into the guest's range
// with an idmapped mount, and a per-guest writable layer under
// DATA/containers/ID. Mount, PID, UTS, IPC, network and cgroup namespaces,
// cgroup v1/v2 limits, a seccomp filter, a reduced capability bounding set,
// a minimal /dev and masked /proc complete the isolation.
//
// No berth process stays alive per container: the daemon forks the
// container's first process itself (package ctinit), which sets the
// container up from inside its namespaces with raw system calls and
// executes the container's init. The driver finds running
// containers again through their pidfiles (PID and start time, in a run
// directory on /run, see Options.RunDir) and their cgroups, so containers
// survive daemon restarts and crashes and are re-adopted.
package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/cgroup"
	"github.com/berthhq/berth/internal/ctinit"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/store"
)

// ImageSource resolves an image name to its read-only root directory;
// *image.Store satisfies it.
type ImageSource interface {
	RootFS(name string) (string, error)
}

// Options configure a Driver.
type Options struct {
	// DataDir is the daemon's data directory; containers live in
	// DataDir/containers.
	DataDir string
	// Store records each guest's id-map slot.
	Store store.Store
	// Images resolves image names.
	Images ImageSource
	// Self is the berth binary, executed as the minimal init of images
	// without one (ctinit.MiniInitMode; default: os.Executable).
	Self string
	// SysRoot is where /sys is (bridge checks); default "/sys".
	SysRoot string
	// Cgroups is the cgroup layout; zero means detect on the host.
	Cgroups *cgroup.Layout
	Log     *slog.Logger
	// KSMAllowed tells whether the node lets guests' memory be merged
	// (its KSM mode is not off); nil means it does. When it does not,
	// containers start as with ksm=0.
	KSMAllowed func(context.Context) bool
	// NoExecHelper runs every exec through ctinit.Join instead of the
	// container's exec helper (see ctinit.Helper).
	NoExecHelper bool
	// RunDir holds the running containers' state (ID.pid: init's PID and
	// start time). Default: /run/berth/ and the first 16 hex digits of
	// the SHA-256 of DataDir's absolute path, under the host's /run (a
	// tmpfs on standard hosts): after a reboot none is left, as nothing
	// runs then. If it cannot be made, the state stays beside each
	// container's layer (DataDir/containers/ID/init.pid, where berth kept
	// it before).
	RunDir string
}

// Driver runs system containers. It is safe for concurrent use.
type Driver struct {
	o    Options
	dir  string
	cg   cgroup.Layout
	cpus int
	// runDir holds the pidfiles ("": beside the layers, see pidFile).
	runDir string

	mu    sync.Mutex
	perID map[int]*sync.Mutex
	// userns holds, per unprivileged container started by this daemon,
	// its user namespace (see userNS).
	userns map[int]cachedNS
	// roots holds, per container started by this daemon, its root file
	// system (see rootFS).
	roots map[int]cachedRoot
	// held holds, per running container started by this daemon, a
	// descriptor of its mount namespace (see holdMounts).
	held map[int]int
	// releasing holds, per container whose mount namespace is being
	// released in the background, a channel closed when that is done.
	releasing map[int]chan struct{}
	// children holds the containers whose init is this daemon's child
	// and not reaped yet (see watch).
	children map[int]*child
	// clean holds the containers whose runtime leftovers this daemon
	// removed and that it has not started since (see precleanup).
	clean map[int]bool
	// halts remembers the halt signal of images' init programs (see
	// haltSignalOf).
	halts map[haltKey]unix.Signal
	// selfProcs are the daemon's own cgroup.procs files, open, by
	// hierarchy: where exec helpers return to (see helperLeave).
	selfProcs map[string]int
	// helperClosing holds, per container whose exec helper is being
	// ended after its init exited, a channel closed when it is gone.
	helperClosing map[int]chan struct{}
}

// cachedRoot is a container's overlayfs root (a detached mount) and what
// it was made from.
type cachedRoot struct {
	fd, userns int
	lower      string
}

// cachedNS is a user namespace descriptor and the id base it maps.
type cachedNS struct{ fd, base int }

var _ guest.Driver = (*Driver)(nil)

// New returns a driver. It creates DataDir/containers (mode 0711: the
// guests' id ranges must traverse it to reach their layers).
func New(o Options) (*Driver, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.SysRoot == "" {
		o.SysRoot = "/sys"
	}
	if o.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("container driver: find the berth binary: %w", err)
		}
		o.Self = self
	}

	d := &Driver{o: o, dir: filepath.Join(o.DataDir, "containers"), cpus: runtime.NumCPU(),
		perID: map[int]*sync.Mutex{}, userns: map[int]cachedNS{}, roots: map[int]cachedRoot{}, held: map[int]int{}, releasing: map[int]chan struct{}{},
		children: map[int]*child{}, clean: map[int]bool{}, helperClosing: map[int]chan struct{}{}}
	if o.Cgroups != nil {
		d.cg = *o.Cgroups
	} else {
		l, err := cgroup.DetectHost()
		if err != nil {
			return nil, fmt.Errorf("container driver: %w", err)
		}
		d.cg = l
	}
	if err := os.MkdirAll(d.dir, 0o711); err != nil {
		return nil, fmt.Errorf("container driver: %w", err)
	}
	if err := os.Chmod(d.dir, 0o711); err != nil {
		return nil, fmt.Errorf("container driver: %w", err)
	}
	if err := d.setupRunDir(); err != nil {
		return nil, fmt.Errorf("container driver: %w", err)
	}
	return d, nil
}

// setupRunDir makes the run directory (Options.RunDir) and moves the
// pidfiles an earlier berth kept beside the layers into it, so that the
// containers they name are adopted. Without a run directory (/run not
// writable) the pidfiles stay where they were.
func (d *Driver) setupRunDir() error {
	dir := d.o.RunDir
	if dir == "" {
		var err error
		if dir, err = DefaultRunDir(d.o.DataDir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if d.o.RunDir != "" {
			return fmt.Errorf("run directory: %w", err)
		}
		d.o.Log.Warn("no run directory: running containers' state stays in the data directory", "dir", dir, "err", err)
		return nil
	}
	d.runDir = dir
	legacy, _ := filepath.Glob(filepath.Join(d.dir, "*", "init.pid"))
	for _, p := range legacy {
		id, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
			if err := writePidfile(d.pidFile(id), b); err != nil {
				return fmt.Errorf("move the pidfile of container %d: %w", id, err)
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("move the pidfile of container %d: %w", id, err)
		}
	}
	return nil
}

// DefaultRunDir is the run directory of a daemon on dataDir when
// Options.RunDir is empty: /run/berth/ and the first 16 hex digits of the
// SHA-256 of dataDir's absolute path (one per data directory, as one
// daemon runs per data directory).
func DefaultRunDir(dataDir string) (string, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return "", fmt.Errorf("run directory: %w", err)
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join("/run/berth", hex.EncodeToString(sum[:8])), nil
}

// Close removes the run directory if no container runs (it is empty);
// running containers keep their state there for the next daemon.
func (d *Driver) Close() error {
	if d.runDir != "" {
		_ = os.Remove(d.runDir)
	}
	return nil
}

// SetKSMAllowed sets Options.KSMAllowed after New: the daemon's KSM
// service comes later than its drivers. Call it before starting guests.
func (d *Driver) SetKSMAllowed(f func(context.Context) bool) { d.o.KSMAllowed = f }

// Kind is api.GuestContainer.
func (d *Driver) Kind() api.GuestKind { return api.GuestContainer }

// CgroupLayout describes where each cgroup controller lives on this host.
func (d *Driver) CgroupLayout() string { return d.cg.Describe() }

// lock serialises operations on one container.
func (d *Driver) lock(id int) func() {
	d.mu.Lock()
	m, ok := d.perID[id]
	if !ok {
		m = &sync.Mutex{}
		d.perID[id] = m
	}
	d.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (d *Driver) gdir(id int) string      { return filepath.Join(d.dir, strconv.Itoa(id)) }
func (d *Driver) upper(id int) string     { return filepath.Join(d.gdir(id), "upper") }
func (d *Driver) work(id int) string      { return filepath.Join(d.gdir(id), "work") }
func (d *Driver) rootMount(id int) string { return filepath.Join(d.gdir(id), "rootfs") }
func (d *Driver) legacyPidFile(id int) string {
	return filepath.Join(d.gdir(id), "init.pid")
}

// pidFile is where container id's runtime state is (PidFile).
func (d *Driver) pidFile(id int) string {
	if d.runDir == "" {
		return d.legacyPidFile(id)
	}
	return filepath.Join(d.runDir, strconv.Itoa(id)+".pid")
}

// PidFile is where the state of running container id is kept (see
// Options.RunDir).
func (d *Driver) PidFile(id int) string     { return d.pidFile(id) }
func (d *Driver) consoleLog(id int) string  { return filepath.Join(d.gdir(id), "console.log") }
func (d *Driver) snapshotDir(id int) string { return filepath.Join(d.gdir(id), "snapshots") }
func cgroupName(id int) string              { return "berth/" + strconv.Itoa(id) }

// Validate checks the container options, that the image exists and that
// every NIC's bridge exists. It only reads.
func (d *Driver) Validate(cfg api.Guest) map[string]string {
	s, bad := parse(cfg, d.cpus)
	if _, dup := bad[KeyImage]; !dup && s.Image != "" && d.o.Images != nil {
		if _, err := d.o.Images.RootFS(s.Image); err != nil {
			bad[KeyImage] = fmt.Sprintf("unknown image %q: %v", s.Image, err)
		}
	}
	for _, n := range s.Nets {
		if err := d.checkBridge(n.Bridge); err != nil {
			bad[KeyNetPrefix+strconv.Itoa(n.Index)] = err.Error()
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return bad
}

func (d *Driver) checkBridge(br string) error {
	if _, err := os.Stat(filepath.Join(d.o.SysRoot, "class/net", br, "bridge")); err != nil {
		return fmt.Errorf("bridge %q does not exist on this host: create it first (ip link add %s type bridge) or name another", br, br)
	}
	return nil
}

// settingsOf parses cfg or returns a *guest.ValidationError.
func (d *Driver) settingsOf(cfg api.Guest) (settings, error) {
	s, bad := parse(cfg, d.cpus)
	if len(bad) > 0 {
		return s, &guest.ValidationError{Fields: bad}
	}
	return s, nil
}

// Create makes the container's directories and allocates its id range.
// A failure removes what it made.
func (d *Driver) Create(ctx context.Context, cfg api.Guest, log guest.Logger) (err error) {
	defer d.lock(cfg.ID)()
	s, err := d.settingsOf(cfg)
	if err != nil {
		return err
	}
	if d.o.Images == nil {
		return errors.New("no image store configured")
	}
	if _, err := d.o.Images.RootFS(s.Image); err != nil {
		return fmt.Errorf("image %q: %w", s.Image, err)
	}
	if _, err := os.Stat(d.gdir(cfg.ID)); err == nil {
		// Left over from a create that crashed half-way: the guest's
		// configuration was just registered, so nothing else owns it.
		log.Printf("removing leftover directory %s", d.gdir(cfg.ID))
		if err := os.RemoveAll(d.gdir(cfg.ID)); err != nil {
			return fmt.Errorf("remove leftover container directory: %w", err)
		}
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(d.gdir(cfg.ID))
			_ = d.releaseIDMap(context.WithoutCancel(ctx), cfg.ID)
		}
	}()
	uid := 0
	if !s.Privileged {
		m, err := d.allocIDMap(ctx, cfg.ID)
		if err != nil {
			return err
		}
		uid = m.Base
		log.Printf("user namespace: root in the container is uid/gid %d on the host (%d ids)", m.Base, IDMapSize)
	} else {
		log.Printf("privileged container: no user namespace, root in the container is root on the host")
	}
	if err := d.makeLayer(cfg.ID, uid); err != nil {
		return err
	}
	log.Printf("created container %d from image %s (writable layer %s)", cfg.ID, s.Image, d.upper(cfg.ID))
	return nil
}

// makeLayer creates an empty writable layer owned by uid (the container's
// root on the host).
func (d *Driver) makeLayer(id, uid int) error {
	if err := os.MkdirAll(d.gdir(id), 0o711); err != nil {
		return fmt.Errorf("create container directory: %w", err)
	}
	for _, p := range []string{d.upper(id), d.work(id), d.rootMount(id)} {
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s: %w", p, err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	return nil
}

// runtimeState is the pidfile (pidFile): who the running init is.
type runtimeState struct {
	PID        int    `json:"pid"`
	StartTime  uint64 `json:"starttime"`
	HaltSignal int    `json:"haltsignal"`
	Privileged bool   `json:"privileged,omitempty"`
	Started    int64  `json:"started"`
	// KSM is the KSM choice init was started with (ctinit.Spec.KSM);
	// exec'd commands get the same.
	KSM string `json:"ksm,omitempty"`
	// NICs are the indexes of the NICs (host veths) the container was
	// started with; nil in pidfiles of older daemons (every possible
	// veth is then looked for at cleanup).
	NICs []int `json:"nics"`
}

// running returns the state of guest id's init if it is alive. Without
// reading anything when this daemon started that init (and has not reaped
// it) or cleaned up after the container's last run.
func (d *Driver) running(id int) (runtimeState, bool) {
	if c := d.liveChild(id); c != nil {
		return c.rs, true
	}
	if d.knownClean(id) {
		return runtimeState{}, false
	}
	rs, ok := readPidfile(d.pidFile(id))
	if !ok {
		return runtimeState{}, false
	}
	return rs, procAlive(rs.PID, rs.StartTime)
}

// Status reports running, paused (frozen) or stopped, with init's PID.
func (d *Driver) Status(ctx context.Context, cfg api.Guest) (guest.State, error) {
	rs, ok := d.running(cfg.ID)
	if !ok {
		return guest.State{Status: api.GuestStopped}, nil
	}
	st := guest.State{Status: api.GuestRunning, PID: rs.PID, Details: map[string]string{
		"cgroup": cgroupName(cfg.ID), "uptime": strconv.FormatInt(time.Now().Unix()-rs.Started, 10),
	}}
	if g, err := d.cg.Open(cgroupName(cfg.ID)); err == nil {
		if frozen, _ := g.Frozen(); frozen {
			st.Status = api.GuestPaused
		}
		if m, err := g.MemoryUsage(); err == nil {
			st.Details["memory"] = strconv.FormatInt(m, 10)
		}
		if p, err := g.Procs(); err == nil {
			st.Details["processes"] = strconv.Itoa(len(p))
		}
	}
	return st, nil
}

// Adopt re-attaches to a container that kept running while the daemon was
// away. Nothing but the pidfile and the cgroup tie berth to a container,
// so this is Status; a stopped container's leftovers (pidfile, cgroup)
// are cleaned up.
func (d *Driver) Adopt(ctx context.Context, cfg api.Guest) (guest.State, error) {
	st, err := d.Status(ctx, cfg)
	if err == nil && st.Status == api.GuestStopped {
		defer d.lock(cfg.ID)()
		d.cleanup(cfg.ID)
	}
	return st, err
}

// cleanup removes a stopped container's runtime leftovers.
func (d *Driver) cleanup(id int) { d.cleanupRun(id, nil) }

// cleanupRun removes the pidfile, cgroups and host veths of a stopped
// container; nics are the NICs it ran with (nil: unknown, every possible
// veth is looked for). Processes left in the cgroups whose root is this
// container's overlayfs belong to nobody (a daemon crashed between
// starting init and recording it) and are killed; others are spared
// (another daemon's container of the same number on a shared host).
// When everything is gone the driver remembers the container as clean.
func (d *Driver) cleanupRun(id int, nics []int) {
	d.releaseMounts(id)
	ok := true
	if err := unix.Unlink(d.pidFile(id)); err != nil && !errors.Is(err, unix.ENOENT) {
		ok = false
		d.o.Log.Warn("container pidfile", "guest", id, "err", err)
	}
	if g, err := d.cg.Open(cgroupName(id)); err == nil {
		rerr := g.Remove(100 * time.Millisecond)
		if rerr != nil {
			n, kerr := g.Kill(2*time.Second, d.ownedBy(id))
			if kerr != nil {
				d.o.Log.Warn("container cgroup: processes left", "guest", id, "err", kerr)
			}
			if n > 0 {
				rerr = g.Remove(2 * time.Second)
			}
		}
		if rerr != nil {
			ok = false
			d.o.Log.Warn("container cgroup", "guest", id, "err", rerr)
		}
	}
	if nics == nil {
		for i := 0; i < MaxNICs; i++ {
			nics = append(nics, i)
		}
	}
	for _, i := range nics {
		name := hostVeth(id, i)
		if _, err := os.Stat(filepath.Join(d.o.SysRoot, "class/net", name)); err == nil {
			if err := deleteLink(name); err != nil {
				ok = false
				d.o.Log.Warn("container veth", "guest", id, "veth", name, "err", err)
			}
		}
	}
	d.setClean(id, ok)
}

// limits turns settings into cgroup limits.
func (s settings) limits() cgroup.Limits {
	l := cgroup.Limits{MemoryBytes: s.MemoryMiB << 20, SwapBytes: s.SwapMiB << 20, Pids: s.Pids,
		CPUQuota: s.CPULimit, CPUWeight: s.CPUUnits}
	if s.Cores > 0 {
		l.CPUs = fmt.Sprintf("0-%d", s.Cores-1)
		if s.Cores == 1 {
			l.CPUs = "0"
		}
	}
	return l
}

// Start boots the container: cgroup, namespaces, id-mapped overlay root,
// network, then init. A failure undoes everything it did.
func (d *Driver) Start(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	defer d.lock(cfg.ID)()
	return d.start(ctx, cfg, log)
}

func (d *Driver) start(ctx context.Context, cfg api.Guest, log guest.Logger) (err error) {
	id := cfg.ID
	ph := d.phases("start", id)
	defer ph.done()
	s, err := d.settingsOf(cfg)
	if err != nil {
		return err
	}
	if _, ok := d.running(id); ok {
		return fmt.Errorf("container %d is already running", id)
	}
	d.precleanup(id)
	ph.mark("precleanup")
	if d.o.Images == nil {
		return errors.New("no image store configured")
	}
	lower, err := d.o.Images.RootFS(s.Image)
	if err != nil {
		return fmt.Errorf("image %q: %w", s.Image, err)
	}
	for _, n := range s.Nets {
		if err := d.checkBridge(n.Bridge); err != nil {
			return fmt.Errorf("net%d: %w", n.Index, err)
		}
	}
	base := 0
	if !s.Privileged {
		m, err := d.lookupIDMap(ctx, id)
		if err != nil {
			return err
		}
		base = m.Base
	}
	if _, err := os.Stat(d.upper(id)); err != nil {
		return fmt.Errorf("container %d has no writable layer (%v): was it created on this node?", id, err)
	}
	ph.mark("lookup")
	grp, err := d.cg.Open(cgroupName(id))
	if err != nil {
		return err
	}
	if err := grp.Create(s.limits()); err != nil {
		_ = grp.Remove(time.Second)
		return err
	}
	defer func() {
		if err != nil {
			d.cleanup(id)
		}
	}()

	ph.mark("cgcreate")
	logf, err := openConsoleLog(d.consoleLog(id))
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	// The minimal init (images without one) is the berth binary, executed
	// through a descriptor: after the switch to the guest's ids the
	// binary's directory may not be searchable (a 0700 build or data
	// directory).
	bin, err := os.Open(d.o.Self)
	if err != nil {
		return fmt.Errorf("open berth binary: %w", err)
	}
	defer bin.Close()
	merge, _ := ksm.EffectiveChoice(cfg, d.o.KSMAllowed == nil || d.o.KSMAllowed(ctx))
	if merge == ksm.ChoiceOn && log != nil {
		if _, err := ksm.ProcessMerge(); errors.Is(err, ksm.ErrMergeAnyUnsupported) {
			log.Printf("ksm=1: %v; only memory that programs mark mergeable themselves can be merged", err)
		}
	}
	userns := -1
	if !s.Privileged {
		if userns, err = d.userNS(id, base); err != nil {
			return err
		}
	}
	rootFD, err := d.rootFS(id, userns, lower)
	if err != nil {
		return err
	}
	defer unix.Close(rootFD)
	ph.mark("overlay")
	netns := -1
	if len(s.Nets) > 0 {
		var rtnl int
		if netns, rtnl, err = ctinit.NewNetNS(userns); err != nil {
			return err
		}
		defer unix.Close(netns)
		defer unix.Close(rtnl)
		for _, n := range s.Nets {
			if err := d.addNIC(id, netns, n); err != nil {
				return fmt.Errorf("net%d: %w", n.Index, err)
			}
		}
		if err := configureNICs(rtnl, s.Nets); err != nil {
			return err
		}
		ph.mark("nics")
	}
	hs, dirs := grp.Hierarchies()
	procs, err := openProcs(dirs)
	if err != nil {
		return err
	}
	defer closeAll(procs)
	spec := ctinit.Spec{Root: d.rootMount(id), Hostname: s.Hostname, Init: s.Init, Privileged: s.Privileged,
		UserNS: userns, NetNS: netns, RootFS: rootFD, CgroupProcs: procs,
		Console: int(logf.Fd()), Null: int(null.Fd()), Self: int(bin.Fd()), KSM: merge.String(), Trace: ph.on()}
	if !d.o.NoExecHelper && merge == ksm.ChoiceDefault {
		if leave, err := d.helperLeave(hs); err != nil {
			d.o.Log.Debug("container exec helper: execs join the container instead", "guest", id, "err", err)
		} else {
			spec.Helper, spec.HelperLeave = true, leave
		}
	}
	for _, n := range s.Nets {
		spec.Nets = append(spec.Nets, ctinit.Net{Name: n.Name})
	}
	ph.mark("prep")
	in, err := ctinit.StartInit(spec)
	if err != nil {
		return fmt.Errorf("%w (see %s)", err, d.consoleLog(id))
	}
	pid := in.PID
	defer func() {
		if err != nil {
			in.Kill()
		}
	}()
	ph.mark("init")
	ph.detail("init", in.Stages)
	if in.Helper == nil {
		// With a helper, the helper holds the mount namespace (it is in
		// it) until it ends after the stop, in its own process.
		d.holdMounts(id, pid)
	}
	if err := d.recordStart(id, pid, lower, s, spec.KSM); err != nil {
		return err
	}
	d.attachHelper(id, pid, in.Helper)
	ph.mark("pidfile")
	if log != nil {
		log.Printf("container %d started: init PID %d, hostname %s, KSM %s", id, pid, s.Hostname, ksmNote(s.KSM, merge))
	}
	return nil
}

// openConsoleLog opens a container's console log for a new run, emptied:
// truncated only if the last run wrote to it (most inits write nothing),
// since truncating even an empty file changes its inode on disk.
func openConsoleLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || st.Size() > 0 {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// helperLeave returns the daemon's own cgroup.procs file in each
// hierarchy of hs, for an exec helper to return to: opened once and kept
// open (the daemon's groups do not change while it runs).
func (d *Driver) helperLeave(hs []string) ([]int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.selfProcs == nil {
		all, err := d.cg.Open("berth")
		if err != nil {
			return nil, err
		}
		ahs, _ := all.Hierarchies()
		dirs, err := d.cg.SelfDirs(ahs)
		if err != nil {
			return nil, err
		}
		fds, err := openProcs(dirs)
		if err != nil {
			return nil, err
		}
		d.selfProcs = map[string]int{}
		for i, h := range ahs {
			d.selfProcs[h] = fds[i]
		}
	}
	out := make([]int, 0, len(hs))
	for _, h := range hs {
		fd, ok := d.selfProcs[h]
		if !ok {
			return nil, fmt.Errorf("no own cgroup in %s", h)
		}
		out = append(out, fd)
	}
	return out, nil
}

// attachHelper gives the running container id (init pid) its exec helper
// (nil: none), or ends the helper if init is already gone.
func (d *Driver) attachHelper(id, pid int, h *ctinit.Helper) {
	if h == nil {
		return
	}
	d.mu.Lock()
	c := d.children[id]
	ok := c != nil && c.rs.PID == pid
	if ok {
		c.helper = h
	}
	d.mu.Unlock()
	if !ok {
		h.Close()
	}
}

// helperOf returns the exec helper of container id running as rs, or nil.
func (d *Driver) helperOf(id int, rs runtimeState) *ctinit.Helper {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.children[id]; c != nil && c.rs.PID == rs.PID && c.rs.StartTime == rs.StartTime {
		return c.helper
	}
	return nil
}

// dropHelper ends container id's exec helper h (found gone).
func (d *Driver) dropHelper(id int, h *ctinit.Helper) {
	d.mu.Lock()
	if c := d.children[id]; c != nil && c.helper == h {
		c.helper = nil
	}
	d.mu.Unlock()
	h.Close()
}

// holdMounts keeps a descriptor of the mount namespace of container id's
// init (pid) until the container stopped (releaseMounts). When init, the
// namespace's last process, exits, the kernel would otherwise unmount the
// container's whole mount tree (/proc, /sys, /dev, …) before it reports
// the exit, which is most of a stop's wait; with the descriptor held, that
// happens when releaseMounts closes it, after the stop, in the
// background.
func (d *Driver) holdMounts(id, pid int) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return // only an optimisation
	}
	d.mu.Lock()
	old, had := d.held[id]
	d.held[id] = fd
	d.mu.Unlock()
	if had {
		unix.Close(old)
	}
}

// releaseMounts lets container id's mount namespace go (see holdMounts),
// in the background.
func (d *Driver) releaseMounts(id int) {
	fd, ok := take(d, d.held, id)
	if !ok {
		return
	}
	done := make(chan struct{})
	d.mu.Lock()
	d.releasing[id] = done
	d.mu.Unlock()
	go func() {
		unix.Close(fd) // the teardown runs before close returns
		close(done)
		d.mu.Lock()
		if d.releasing[id] == done {
			delete(d.releasing, id)
		}
		d.mu.Unlock()
	}()
}

// waitReleased waits until a background release of container id's mount
// namespace has finished: its tree holds the container's overlayfs, and a
// new overlayfs on the same layer is refused while the old one lives.
func (d *Driver) waitReleased(id int) {
	d.mu.Lock()
	ch, hc := d.releasing[id], d.helperClosing[id]
	d.mu.Unlock()
	if ch != nil {
		<-ch
	}
	if hc != nil {
		<-hc
	}
}

// take removes and returns m[id] under d.mu.
func take[T any](d *Driver, m map[int]T, id int) (T, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := m[id]
	delete(m, id)
	return v, ok
}

// userNS returns the user namespace of container id (ids 0 to
// IDMapSize-1 are host ids base and up), made on its first start and kept
// for the next ones while the daemon runs: making one takes two children
// (its id map is written from outside), and little of a stopped run
// survives in it (berth's seccomp filter refuses the keyring calls;
// namespaces, mounts and processes are new for every run; only its own
// user.max_* limits stay as its root set them). The caller holds the
// container's lock; the descriptor stays owned by the cache.
func (d *Driver) userNS(id, base int) (int, error) {
	d.mu.Lock()
	c, ok := d.userns[id]
	d.mu.Unlock()
	if ok && c.base == base {
		return c.fd, nil
	}
	fd, err := ctinit.NewUserNS(base, IDMapSize)
	if err != nil {
		return -1, err
	}
	if ok {
		d.forget(id) // the root is id-mapped through the old one
	}
	d.mu.Lock()
	d.userns[id] = cachedNS{fd: fd, base: base}
	d.mu.Unlock()
	return fd, nil
}

// forget drops container id's cached root file system and user
// namespace; closing the last reference to the root's overlayfs syncs it.
// The caller holds the container's lock.
func (d *Driver) forget(id int) {
	d.dropRoot(id)
	if c, ok := take(d, d.userns, id); ok {
		unix.Close(c.fd)
	}
}

// dropRoot drops container id's cached root file system (before its
// layer is changed from outside: a rollback). The caller holds the
// container's lock.
func (d *Driver) dropRoot(id int) {
	if r, ok := take(d, d.roots, id); ok {
		unix.Close(r.fd)
	}
}

// rootFS returns a new detached mount of container id's root file system
// for one run: a clone of the overlayfs mount made on its first start
// (lower layer lower, id-mapped through userns) and kept while the daemon
// runs. Keeping it makes later starts cheap (a clone instead of a new
// overlayfs) and stops too: the overlayfs is not shut down when the
// container's mount namespace goes, so the stop does not wait for it to
// sync the upper file system (that happens when the daemon drops it:
// destroy, rollback, an image change, or the daemon's exit). The caller
// holds the container's lock and closes the returned descriptor.
func (d *Driver) rootFS(id, userns int, lower string) (int, error) {
	d.mu.Lock()
	r, ok := d.roots[id]
	d.mu.Unlock()
	if ok && (r.lower != lower || r.userns != userns) {
		d.dropRoot(id)
		ok = false
	}
	if !ok {
		d.waitReleased(id)
		fd, err := overlayMount(userns, lower, d.upper(id), d.work(id))
		if err != nil {
			return -1, err
		}
		r = cachedRoot{fd: fd, userns: userns, lower: lower}
		d.mu.Lock()
		d.roots[id] = r
		d.mu.Unlock()
	}
	m, err := unix.OpenTree(r.fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return -1, fmt.Errorf("clone the root file system mount: %w", err)
	}
	return m, nil
}

// openProcs opens the cgroup.procs file of each cgroup directory for
// writing.
func openProcs(dirs []string) ([]int, error) {
	fds := make([]int, 0, len(dirs))
	for _, dir := range dirs {
		fd, err := unix.Open(filepath.Join(dir, "cgroup.procs"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("open cgroup %s: %w", dir, err)
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// ksmNote says how a container's memory meets KSM, for the start log.
func ksmNote(asked, got ksm.Choice) string {
	switch {
	case got == ksm.ChoiceOff && asked != ksm.ChoiceOff:
		return "off (disabled on this node): nothing inside can make memory mergeable"
	case got == ksm.ChoiceOff:
		return "off (ksm=0): nothing inside can make memory mergeable"
	case got == ksm.ChoiceOn:
		return "on (ksm=1): all memory mergeable"
	}
	return "default: only memory that programs mark mergeable"
}

// overlayMount builds the container's root as a detached overlayfs mount:
// the image's rootfs (id-mapped into the user namespace userns unless it
// is -1: privileged) below, the guest's layer above. It returns the mount
// fd.
func overlayMount(userns int, lower, upper, work string) (int, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, lower, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open image rootfs %s: %w", lower, err)
	}
	defer unix.Close(tree)
	if userns >= 0 {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NODEV, Userns_fd: uint64(userns)}
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return -1, fmt.Errorf("id-map the image rootfs (needs a kernel with idmapped mounts, 5.12 or later, and a file system that supports them): %w", err)
		}
	}
	fs, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("overlayfs: %w", err)
	}
	defer unix.Close(fs)
	if err := unix.FsconfigSetFd(fs, "lowerdir+", tree); err != nil {
		return -1, fmt.Errorf("overlayfs lower layer: %w", err)
	}
	for k, v := range map[string]string{"upperdir": upper, "workdir": work} {
		if err := unix.FsconfigSetString(fs, k, v); err != nil {
			return -1, fmt.Errorf("overlayfs %s %s: %w", k, v, err)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return -1, fmt.Errorf("create overlayfs: %w", err)
	}
	m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("mount overlayfs: %w", err)
	}
	return m, nil
}

// haltSignal picks the signal that makes the container's init power off:
// SIGUSR2 for busybox init, SIGRTMIN+4 for systemd, SIGTERM for berth's
// minimal init (no init in the image), SIGPWR otherwise (sysvinit, LXC's
// default).
func haltSignal(lower, upper string, initArgv []string) unix.Signal {
	path := "/sbin/init"
	if len(initArgv) > 0 {
		path = initArgv[0]
	}
	var target string
	found := false
	for _, layer := range []string{upper, lower} {
		p := filepath.Join(layer, path)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		found = true
		if t, err := filepath.EvalSymlinks(p); err == nil {
			target = t
		} else if t, err := os.Readlink(p); err == nil {
			target = t
		} else {
			target = p
		}
		break
	}
	switch {
	case !found:
		return unix.SIGTERM
	case strings.Contains(filepath.Base(target), "busybox"):
		return unix.SIGUSR2
	case strings.Contains(target, "systemd"):
		return unix.Signal(38) // SIGRTMIN+4: poweroff
	}
	return unix.SIGPWR
}

// Stop kills the container at once: SIGKILL to init ends its PID
// namespace and every process in it.
func (d *Driver) Stop(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	defer d.lock(cfg.ID)()
	return d.stop(ctx, cfg.ID, log)
}

func (d *Driver) stop(ctx context.Context, id int, log guest.Logger) error {
	ph := d.phases("stop", id)
	defer ph.done()
	rs, ok := d.running(id)
	if !ok {
		d.cleanup(id)
		return nil
	}
	d.thaw(id)
	ph.mark("pre")
	if err := d.signalAndWait(ctx, id, rs, unix.SIGKILL, 30*time.Second); err != nil {
		return err
	}
	ph.mark("kill")
	d.cleanupRun(id, rs.NICs)
	ph.mark("cleanup")
	if log != nil {
		log.Printf("container %d stopped", id)
	}
	return nil
}

// thaw thaws container id's cgroup if it is frozen: a frozen group cannot
// die or act on a signal.
func (d *Driver) thaw(id int) {
	if g, err := d.cg.Open(cgroupName(id)); err == nil {
		if fz, _ := g.Frozen(); fz {
			_ = g.Freeze(false)
		}
	}
}

// signalAndWait sends sig to init through a pidfd and waits up to timeout
// for it to exit (for this daemon's child: to be reaped, which leaves its
// cgroups empty). Both wait on the runtime's poller.
func (d *Driver) signalAndWait(ctx context.Context, id int, rs runtimeState, sig unix.Signal, timeout time.Duration) error {
	if c := d.liveChild(id); c != nil && c.rs.PID == rs.PID && c.rs.StartTime == rs.StartTime {
		if err := c.p.signal(sig); err != nil {
			return fmt.Errorf("signal init %d: %w", rs.PID, err)
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-c.done:
			return nil
		case <-t.C:
			return errTimeout
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p, err := openPidfd(rs.PID)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("pidfd of init %d: %w", rs.PID, err)
	}
	defer p.close()
	// The PID may have been recycled between reading the pidfile and
	// opening the pidfd: check the start time again.
	if !procAlive(rs.PID, rs.StartTime) {
		return nil
	}
	if err := p.signal(sig); err != nil {
		return fmt.Errorf("signal init %d: %w", rs.PID, err)
	}
	return waitPidfd(ctx, p, rs.PID, timeout)
}

// errTimeout says a process did not exit in time.
var errTimeout = errors.New("timed out")

// waitPidfd waits until the process of p (not this daemon's child) exits,
// up to timeout.
func waitPidfd(ctx context.Context, p *pidfd, pid int, timeout time.Duration) error {
	err := p.wait(ctx, false, time.Now().Add(timeout))
	if err != nil && !errors.Is(err, errTimeout) && ctx.Err() == nil {
		return fmt.Errorf("wait for %d: %w", pid, err)
	}
	return err
}

// Shutdown asks init to power off (the signal its kind of init expects)
// and stops the container hard if it is still up after timeout.
func (d *Driver) Shutdown(ctx context.Context, cfg api.Guest, timeout time.Duration, log guest.Logger) error {
	defer d.lock(cfg.ID)()
	return d.shutdown(ctx, cfg.ID, timeout, log)
}

func (d *Driver) shutdown(ctx context.Context, id int, timeout time.Duration, log guest.Logger) error {
	rs, ok := d.running(id)
	if !ok {
		d.cleanup(id)
		return nil
	}
	d.thaw(id)
	sig := unix.Signal(rs.HaltSignal)
	if sig == 0 {
		sig = unix.SIGPWR
	}
	if log != nil {
		log.Printf("asking container %d to shut down (signal %d to init), timeout %s", id, int(sig), timeout)
	}
	err := d.signalAndWait(ctx, id, rs, sig, timeout)
	if errors.Is(err, errTimeout) {
		if log != nil {
			log.Printf("container %d did not shut down within %s: stopping it", id, timeout)
		}
		return d.stop(context.WithoutCancel(ctx), id, log)
	}
	if err != nil {
		return err
	}
	d.cleanupRun(id, rs.NICs)
	if log != nil {
		log.Printf("container %d shut down", id)
	}
	return nil
}

// Destroy removes the container's writable layer, snapshots and id range.
// The image is untouched.
func (d *Driver) Destroy(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	defer d.lock(cfg.ID)()
	if _, ok := d.running(cfg.ID); ok {
		return fmt.Errorf("container %d is running: stop it first", cfg.ID)
	}
	d.cleanup(cfg.ID)
	d.forget(cfg.ID)
	if err := os.RemoveAll(d.gdir(cfg.ID)); err != nil {
		return fmt.Errorf("remove container %d: %w", cfg.ID, err)
	}
	if err := d.releaseIDMap(ctx, cfg.ID); err != nil {
		return err
	}
	if log != nil {
		log.Printf("removed container %d's layer %s", cfg.ID, d.gdir(cfg.ID))
	}
	return nil
}
