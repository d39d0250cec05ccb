// Package uml is berth's driver for User Mode Linux guests: a Linux kernel
// (Debian's user-mode-linux) run as an ordinary host process, preferably
// as an unprivileged user. It builds the kernel command line (ubd disks
// with copy-on-write files over shared read-only bases, ethN over tuntap
// in a bridge, multicast or uml_switch, con= and ssl= channels), runs the
// kernel under a console relay that outlives the daemon, controls it over
// the management console (mconsole), detects failed boots and retries
// once, and merges COW files into new bases with uml_moo.
package uml

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/hostproc"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/mconsole"
	"github.com/berthhq/berth/internal/tap"
)

// Driver runs UML guests. Each guest lives in Root/<id>.
type Driver struct {
	Root string
	// Helper is the command line that runs RelayMain: the berth binary
	// and RelayCommand.
	Helper []string
	// User is the host account UML kernels run as; it is created (as a
	// system user) when missing. Empty means root.
	User string
	// TunDevice is the TUN/TAP clone device a tuntap NIC opens.
	TunDevice string
	// UmlMoo is the uml_moo binary (Debian's uml-utilities).
	UmlMoo string
	// BootTimeout bounds how long Start waits for the root file system
	// to be mounted.
	BootTimeout time.Duration
	// Images resolves image=NAME disks; the daemon sets it (SetImages).
	Images ImageSource
	Net    tap.Net
	Proc   hostproc.Proc
	Log    *slog.Logger

	// bootArgs, when set, rewrites the kernel arguments of boot attempt
	// N (from 1): tests make an attempt fail for a real reason.
	bootArgs func(attempt int, args []string) []string
}

// DefaultUser is the system user UML guests run as.
const DefaultUser = "berth-uml"

// New returns a driver for guests under root on the real host; helper runs
// the console relay.
func New(root string, helper []string, log *slog.Logger) *Driver {
	return &Driver{Root: root, Helper: helper, User: DefaultUser, UmlMoo: "uml_moo", TunDevice: "/dev/net/tun", BootTimeout: 90 * time.Second,
		Net: tap.Host, Proc: "/proc", Log: log}
}

var _ guest.Driver = (*Driver)(nil)

// ImageSource finds images' ext4 root images and opens them to the
// unprivileged UML user; *image.Store satisfies it.
type ImageSource interface {
	Path(ctx context.Context, name, format string) (string, error)
	GrantRead(ctx context.Context, name, format string, gid int) error
}

// SetImages hands the driver the node's image store; the daemon calls it
// before serving requests.
func (d *Driver) SetImages(s *image.Store) { d.Images = s }

// ImagesOf returns the names of the images cfg's disks use, so the image
// store refuses to remove them.
func (d *Driver) ImagesOf(cfg api.Guest) []string {
	s, errs := ParseSpec(cfg.Config)
	if errs != nil {
		return nil
	}
	var names []string
	for _, dk := range s.Disks {
		if dk.ImageName != "" {
			names = append(names, dk.ImageName)
		}
	}
	return names
}

// resolve fills in the paths of image=NAME disks: the image's ext4 root
// image, shared read-only by every guest on it.
func (d *Driver) resolve(ctx context.Context, s *Spec) error {
	for i, dk := range s.Disks {
		if dk.ImageName == "" {
			continue
		}
		if d.Images == nil {
			return fmt.Errorf("%s: image=%s: this node has no image store", dk.Key, dk.ImageName)
		}
		p, err := d.Images.Path(ctx, dk.ImageName, api.ImageFormatExt4)
		if err != nil {
			return fmt.Errorf("%s: %w (UML guests boot from an image's ext4 root image; 'berth image build debian NAME --disk ext4' builds one with it)", dk.Key, err)
		}
		s.Disks[i].Image = p
	}
	return nil
}

// Kind returns api.GuestUML.
func (d *Driver) Kind() api.GuestKind { return api.GuestUML }

// Validate checks the options without touching the host.
func (d *Driver) Validate(cfg api.Guest) map[string]string {
	_, errs := ParseSpec(cfg.Config)
	return errs
}

func (d *Driver) spec(cfg api.Guest) (Spec, error) {
	if cfg.Kind != api.GuestUML {
		return Spec{}, fmt.Errorf("guest %d is a %s, not a UML guest", cfg.ID, cfg.Kind)
	}
	s, errs := ParseSpec(cfg.Config)
	if errs != nil {
		return Spec{}, &guest.ValidationError{Fields: errs}
	}
	return s, nil
}

func (d *Driver) dir(id int) string { return filepath.Join(d.Root, strconv.Itoa(id)) }

// ConsoleLog is the file holding the guest's main console output since
// its last start.
func (d *Driver) ConsoleLog(id int) string { return filepath.Join(d.dir(id), consoleLog) }

// MconsoleSocket is the guest's management console socket.
func (d *Driver) MconsoleSocket(id int) string { return filepath.Join(d.dir(id), "uml", "mconsole") }

func (d *Driver) cowPath(id int, dk Disk) string { return filepath.Join(d.dir(id), dk.Key+".cow") }

func tapName(id, index int) string { return fmt.Sprintf("tap%du%d", id, index) }

// umid is the UML instance name; uml_dir is the guest directory, so the
// mconsole socket is DIR/uml/mconsole.
const umid = "uml"

func mark(id int) string { return fmt.Sprintf("\x00berth.guest=%d", id) }

// Args returns the kernel command line (without the kernel) for a guest
// whose directory is the current directory of the process.
func Args(id int, s Spec) []string {
	a := []string{fmt.Sprintf("mem=%dM", s.MemoryMiB), "umid=" + umid, "uml_dir=.", fmt.Sprintf("berth.guest=%d", id)}
	for _, dk := range s.Disks {
		switch {
		case dk.COW:
			a = append(a, fmt.Sprintf("ubd%d=%s.cow,%s", dk.Index, dk.Key, dk.Image))
		case dk.RO:
			a = append(a, fmt.Sprintf("ubd%dr=%s", dk.Index, dk.Image))
		default:
			a = append(a, fmt.Sprintf("ubd%d=%s", dk.Index, dk.Image))
		}
	}
	if len(s.Disks) > 0 {
		a = append(a, "root=/dev/ubd"+string(rune('a'+s.Disks[0].Index)))
	}
	for _, n := range s.NICs {
		switch n.Mode {
		case "tuntap":
			mac := n.MAC
			if mac == "" {
				mac = DefaultMAC(id, n.Index)
			}
			a = append(a, fmt.Sprintf("eth%d=tuntap,%s,%s", n.Index, tapName(id, n.Index), mac))
		case "mcast":
			a = append(a, fmt.Sprintf("eth%d=mcast,%s,%s,%d,1", n.Index, DefaultMAC(id, n.Index), n.Group, n.Port))
		case "daemon":
			a = append(a, fmt.Sprintf("eth%d=daemon,%s,unix,%s", n.Index, DefaultMAC(id, n.Index), n.Socket))
		}
	}
	con := s.Console
	if con == "fd" {
		con = "fd:0,fd:1"
	}
	a = append(a, "con=null", "con0="+con, "ssl="+s.Serial)
	if s.Append != "" {
		a = append(a, strings.Fields(s.Append)...)
	}
	return a
}

// Create checks the host and makes the guest's directory; COW files are
// made by the kernel at first boot.
func (d *Driver) Create(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	if err := d.resolve(ctx, &s); err != nil {
		return err
	}
	if err := d.preflight(cfg.ID, s); err != nil {
		return err
	}
	if err := os.MkdirAll(d.Root, 0o711); err != nil {
		return fmt.Errorf("create %s: %w", d.Root, err)
	}
	if err := os.Mkdir(d.dir(cfg.ID), 0o700); err != nil {
		return fmt.Errorf("create guest directory: %w (left over from an earlier guest %d? remove it)", err, cfg.ID)
	}
	for _, dk := range s.Disks {
		switch {
		case dk.COW && dk.ImageName != "":
			log.Printf("%s: copy-on-write over image %s (%s)", dk.Key, dk.ImageName, dk.Image)
		case dk.COW:
			log.Printf("%s: copy-on-write over read-only base %s", dk.Key, dk.Image)
		}
	}
	return nil
}

// preflight checks files, bridges and ports before anything starts.
func (d *Driver) preflight(id int, s Spec) error {
	if st, err := os.Stat(s.Kernel); err != nil || st.Mode()&0o111 == 0 {
		return fmt.Errorf("UML kernel %s is missing or not executable (install Debian's user-mode-linux): %v", s.Kernel, errOr(err, "not executable"))
	}
	for _, dk := range s.Disks {
		st, err := os.Stat(dk.Image)
		if err != nil {
			return fmt.Errorf("%s: image %s: %w", dk.Key, dk.Image, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s: %s is not a regular file", dk.Key, dk.Image)
		}
		if dk.COW {
			if h, err := ReadCOWHeader(d.cowPath(id, dk)); err == nil {
				if err := CheckBase(h, dk.Image); err != nil {
					return fmt.Errorf("%s: %w", dk.Key, err)
				}
			}
		}
	}
	for _, n := range s.NICs {
		switch n.Mode {
		case "tuntap":
			if err := d.Net.BridgeExists(n.Bridge); err != nil {
				return fmt.Errorf("%s: %w", n.Key, err)
			}
		case "daemon":
			if _, err := os.Stat(n.Socket); err != nil {
				return fmt.Errorf("%s: uml_switch socket %s: %w (start uml_switch)", n.Key, n.Socket, err)
			}
		}
	}
	for _, ch := range []struct{ opt, v string }{{"console", s.Console}, {"serial", s.Serial}} {
		if p := ChannelPort(ch.v); p != 0 {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err != nil {
				return fmt.Errorf("%s=port:%d: the port is already in use: choose another", ch.opt, p)
			}
			ln.Close()
		}
	}
	if p := filepath.Join(d.dir(id), consoleSock); len(p) >= 108 {
		return fmt.Errorf("socket path %s is over the 107 bytes a unix socket allows: use a shorter data directory", p)
	}
	return nil
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

func (d *Driver) pid(id int) int {
	pid, _ := hostproc.ReadPidfile(filepath.Join(d.dir(id), pidFile))
	if pid > 0 && d.Proc.Alive(pid, mark(id)) {
		return pid
	}
	return 0
}

// account returns the uid and gid to run as (-1 for root) and the reason
// when it falls back to root.
func (d *Driver) account(ctx context.Context, s Spec) (uid, gid int, name, why string) {
	if d.User == "" {
		return -1, -1, "root", "no unprivileged user configured"
	}
	u, err := user.Lookup(d.User)
	if err != nil {
		out, err := exec.CommandContext(ctx, "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", d.User).CombinedOutput()
		if err != nil {
			return -1, -1, "root", fmt.Sprintf("cannot create user %s: %v: %s", d.User, err, strings.TrimSpace(string(out)))
		}
		if u, err = user.Lookup(d.User); err != nil {
			return -1, -1, "root", err.Error()
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	for _, dk := range s.Disks {
		if dk.ImageName != "" && d.Images != nil {
			if err := d.Images.GrantRead(ctx, dk.ImageName, api.ImageFormatExt4, gid); err != nil {
				return -1, -1, "root", fmt.Sprintf("%s: %v", dk.Key, err)
			}
		}
		if err := reachable(dk.Image, uid, gid, !dk.COW && !dk.RO); err != nil {
			return -1, -1, "root", fmt.Sprintf("%s: %v", dk.Key, err)
		}
	}
	if err := reachable(s.Kernel, uid, gid, false); err != nil {
		return -1, -1, "root", err.Error()
	}
	for _, n := range s.NICs {
		if n.Mode != "tuntap" {
			continue
		}
		if err := reachable(d.TunDevice, uid, gid, true); err != nil {
			return -1, -1, "root", fmt.Sprintf("%s: %v (Debian's udev makes it mode 0666)", n.Key, err)
		}
	}
	return uid, gid, d.User, ""
}

// reachable checks by mode bits that uid/gid can open path (for writing
// when write is set), including search permission on every parent.
func reachable(path string, uid, gid int, write bool) error {
	may := func(st os.FileInfo, bit os.FileMode) bool {
		sys := st.Sys().(*syscall.Stat_t)
		switch {
		case int(sys.Uid) == uid:
			return st.Mode().Perm()&(bit<<6) != 0
		case int(sys.Gid) == gid:
			return st.Mode().Perm()&(bit<<3) != 0
		}
		return st.Mode().Perm()&bit != 0
	}
	for p := filepath.Dir(path); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !may(st, 0o1) {
			return fmt.Errorf("directory %s is not searchable by uid %d", p, uid)
		}
		if p == "/" {
			break
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !may(st, 0o4) || (write && !may(st, 0o2)) {
		return fmt.Errorf("%s is not %s by uid %d", path, map[bool]string{true: "writable", false: "readable"}[write], uid)
	}
	return nil
}

// A boot fails when, before the root file system is mounted, the kernel
// exits, its console shows a panic, or BootTimeout passes. Under heavy
// host load this happens to boots that succeed the next time (a crypto
// self-test times out, then the root disk fails to open and the kernel
// panics: "VFS: Unable to mount root fs"), so Start tries twice.
var (
	// panicLine marks a kernel that gave up; UML aborts right after.
	panicLine = "Kernel panic"
	// noRetry are causes a second attempt cannot cure: the COW file no
	// longer matches its base image.
	noRetry = []string{"mtime mismatch", "Backing file mismatch", "size mismatch"}
	// bootDone are console lines of a kernel that mounted its root, for
	// guests whose mconsole is slow to answer.
	bootDone = []string{"VFS: Mounted root", "Run /sbin/init"}
)

// bootAttempts is how often Start boots a guest whose boot fails.
const bootAttempts = 2

// bootError is a boot that failed before the guest came up.
type bootError struct {
	id int
	// reason says what gave the failure away.
	reason string
	// console is the part of the console that explains it.
	console string
	retry   bool
}

// newBootError describes a failed boot from its console: the lines that
// explain it, and whether another attempt may succeed.
func newBootError(id int, reason, console string) *bootError {
	text := strings.ReplaceAll(console, "\r", "")
	e := &bootError{id: id, reason: reason, console: excerpt(text, 20), retry: true}
	for _, m := range noRetry {
		if strings.Contains(text, m) {
			e.retry = false
			e.reason += fmt.Sprintf(" (%q: another attempt cannot help)", m)
		}
	}
	return e
}

func (e *bootError) Error() string {
	return fmt.Sprintf("UML guest %d failed to boot: %s; its console:\n%s", e.id, e.reason, e.console)
}

// Start boots the guest and waits until its root file system is mounted.
// A boot that fails before that is reported in the task log with the
// console lines that explain it, cleaned up (kernel, relay, taps,
// sockets, the COW files it made) and tried once more. On failure
// nothing is left running.
func (d *Driver) Start(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	if pid := d.pid(cfg.ID); pid != 0 {
		return fmt.Errorf("UML guest %d is already running (PID %d)", cfg.ID, pid)
	}
	if err := d.resolve(ctx, &s); err != nil {
		return err
	}
	if err := d.preflight(cfg.ID, s); err != nil {
		return err
	}
	var reasons []string
	for attempt := 1; ; attempt++ {
		err := d.boot(ctx, cfg.ID, s, attempt, log)
		var be *bootError
		if !errors.As(err, &be) {
			return err
		}
		reasons = append(reasons, fmt.Sprintf("attempt %d: %s", attempt, be.reason))
		if attempt == bootAttempts || !be.retry {
			if attempt == 1 {
				return err
			}
			return fmt.Errorf("UML guest %d failed to boot %d times (%s); the console of the last attempt:\n%s\n"+
				"nothing was left running; check the host's load and the guest's disks, then start it again",
				cfg.ID, attempt, strings.Join(reasons, "; "), be.console)
		}
		log.Printf("boot attempt %d of %d failed: %s; the console:\n%s", attempt, bootAttempts, be.reason, be.console)
		log.Printf("removed the failed boot's kernel, taps, sockets and new COW files; booting again")
	}
}

// boot makes one attempt to boot the guest; on failure it leaves nothing
// behind.
func (d *Driver) boot(ctx context.Context, id int, s Spec, attempt int, log guest.Logger) (err error) {
	dir := d.dir(id)
	d.cleanup(context.WithoutCancel(ctx), id, s)
	var fresh []string
	for _, dk := range s.Disks {
		if _, err := os.Stat(d.cowPath(id, dk)); dk.COW && err != nil {
			fresh = append(fresh, d.cowPath(id, dk))
		}
	}
	var relay *exec.Cmd
	var relayDone chan struct{}
	defer func() {
		if err == nil {
			return
		}
		if relay != nil {
			// The relay ends the kernel and its helpers, even one it
			// has not yet named in uml.pid, and exits after them.
			relay.Process.Signal(syscall.SIGTERM)
			select {
			case <-relayDone:
			case <-time.After(15 * time.Second):
			}
		}
		d.kill(context.WithoutCancel(ctx), id)
		d.cleanup(context.WithoutCancel(ctx), id, s)
		// A COW file the failed boot made may be half-written.
		for _, f := range fresh {
			os.Remove(f)
		}
	}()
	uid, gid, account, why := d.account(ctx, s)
	if why != "" {
		log.Printf("running as root: %s", why)
	} else {
		log.Printf("running as unprivileged user %s (uid %d)", account, uid)
	}
	if uid >= 0 {
		os.Chown(dir, uid, gid)
		for _, dk := range s.Disks {
			os.Chown(d.cowPath(id, dk), uid, gid)
		}
	}
	os.WriteFile(filepath.Join(dir, "account"), []byte(account+"\n"), 0o644)
	for _, n := range s.NICs {
		if n.Mode != "tuntap" {
			continue
		}
		if err := d.Net.Create(ctx, tapName(id, n.Index), n.Bridge, uid); err != nil {
			return fmt.Errorf("%s: %w", n.Key, err)
		}
		log.Printf("%s: tap %s in bridge %s", n.Key, tapName(id, n.Index), n.Bridge)
	}
	if len(d.Helper) == 0 {
		return errors.New("no console relay helper configured")
	}
	kargs := Args(id, s)
	if d.bootArgs != nil {
		kargs = d.bootArgs(attempt, kargs)
	}
	args := append(append([]string{}, d.Helper[1:]...), dir, strconv.Itoa(uid), strconv.Itoa(gid), s.Kernel)
	args = append(args, kargs...)
	cmd := exec.Command(d.Helper[0], args...)
	cmd.Args[0] = "berth"
	cmd.Dir = dir
	relayLog, err := os.OpenFile(filepath.Join(dir, "relay.log"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer relayLog.Close()
	cmd.Stdout, cmd.Stderr = relayLog, relayLog
	// The relay gets its own session so that it, and the guest, outlive
	// the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The last run's console and exit status must not pass for this
	// one's.
	os.Remove(d.ConsoleLog(id))
	os.Remove(filepath.Join(dir, exitFile))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start console relay: %w", err)
	}
	relay, relayDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(relayDone) }()
	log.Printf("UML kernel %s, %d MiB, %d disks", s.Kernel, s.MemoryMiB, len(s.Disks))
	return d.waitBoot(ctx, id, relayDone, log)
}

// waitBoot waits until the guest's root file system is mounted, which
// mconsole tells whatever the console shows, or the boot fails.
func (d *Driver) waitBoot(ctx context.Context, id int, relayDone <-chan struct{}, log guest.Logger) error {
	deadline := time.NewTimer(d.BootTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	failed := func(reason string) error {
		b, _ := os.ReadFile(d.ConsoleLog(id))
		return newBootError(id, reason, string(b))
	}
	for {
		b, _ := os.ReadFile(d.ConsoleLog(id))
		text := string(b)
		if strings.Contains(text, panicLine) {
			return failed("the kernel panicked")
		}
		up := false
		for _, m := range bootDone {
			up = up || strings.Contains(text, m)
		}
		if up || d.rootMounted(ctx, id) {
			log.Printf("UML guest %d is up (PID %d)", id, d.pid(id))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-relayDone:
			status, err := os.ReadFile(filepath.Join(d.dir(id), exitFile))
			if err != nil {
				rl, _ := os.ReadFile(filepath.Join(d.dir(id), "relay.log"))
				return failed("the console relay exited: " + strings.TrimSpace(string(rl)))
			}
			how := "exited"
			if b, _ := os.ReadFile(d.ConsoleLog(id)); strings.Contains(string(b), panicLine) {
				how = "panicked and exited"
			}
			return failed(fmt.Sprintf("the kernel %s (%s)", how, strings.TrimSpace(string(status))))
		case <-deadline.C:
			return failed(fmt.Sprintf("no root file system after %s", d.BootTimeout))
		case <-tick.C:
		}
	}
}

// rootMounted asks the kernel through mconsole whether a file system is
// mounted on / (other than the initial rootfs).
func (d *Driver) rootMounted(ctx context.Context, id int) bool {
	mctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	mounts, err := mconsole.Send(mctx, d.MconsoleSocket(id), "proc mounts")
	return err == nil && RootMounted(mounts)
}

// RootMounted reports whether a /proc/mounts text has a file system
// other than the kernel's initial rootfs mounted on /.
func RootMounted(mounts string) bool {
	for _, l := range strings.Split(mounts, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[1] == "/" && f[2] != "rootfs" {
			return true
		}
	}
	return false
}

// excerpt returns the console lines that explain a failed boot: the last
// n lines up to the panic line (the stack dump after it says little).
func excerpt(text string, n int) string {
	if i := strings.Index(text, panicLine); i >= 0 {
		if j := strings.IndexByte(text[i:], '\n'); j >= 0 {
			text = text[:i+j]
		}
	}
	return tail(text, n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kill ends the guest's kernel and all its host processes.
func (d *Driver) kill(ctx context.Context, id int) error {
	pid := d.pid(id)
	if pid == 0 {
		return nil
	}
	// The kernel leads its own process group: take its helpers too.
	syscall.Kill(-pid, syscall.SIGKILL)
	return d.Proc.Kill(ctx, pid, mark(id))
}

// relay returns the console relay of the guest's kernel pid (its
// parent), or 0.
func (d *Driver) relay(id, pid int) int {
	if ppid, err := d.Proc.Parent(pid); err == nil && d.Proc.Alive(ppid, mark(id), RelayCommand) {
		return ppid
	}
	return 0
}

// waitRelay gives the console relay, once its kernel is gone, up to 5
// seconds to record the exit status and remove its socket, so that a
// stopped guest leaves no process behind.
func (d *Driver) waitRelay(ctx context.Context, id, relay int) {
	if relay == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d.Proc.WaitGone(wctx, relay, mark(id), RelayCommand)
}

// cleanup removes what a run leaves behind: taps, the umid directory,
// sockets and the paused flag.
func (d *Driver) cleanup(ctx context.Context, id int, s Spec) {
	for _, n := range s.NICs {
		if n.Mode == "tuntap" {
			if err := d.Net.Delete(ctx, tapName(id, n.Index)); err != nil && d.Log != nil {
				d.Log.Warn("remove tap", "uml", id, "err", err)
			}
		}
	}
	dir := d.dir(id)
	os.RemoveAll(filepath.Join(dir, umid))
	for _, f := range []string{pidFile, consoleSock, "paused"} {
		os.Remove(filepath.Join(dir, f))
	}
}

// Mconsole sends cmd to a running guest's management console.
func (d *Driver) Mconsole(ctx context.Context, id int, cmd string) (string, error) {
	if d.pid(id) == 0 {
		return "", fmt.Errorf("UML guest %d is not running", id)
	}
	return mconsole.Send(ctx, d.MconsoleSocket(id), cmd)
}

// Shutdown sends Ctrl-Alt-Del through mconsole (cad: init shuts the guest
// down) and waits; then it halts the kernel, then kills it.
func (d *Driver) Shutdown(ctx context.Context, cfg api.Guest, timeout time.Duration, log guest.Logger) error {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	pid := d.pid(cfg.ID)
	if pid == 0 {
		d.cleanup(ctx, cfg.ID, s)
		log.Printf("UML guest %d is not running", cfg.ID)
		return nil
	}
	os.Remove(filepath.Join(d.dir(cfg.ID), "paused"))
	d.Mconsole(ctx, cfg.ID, "go")
	relay := d.relay(cfg.ID, pid)
	log.Printf("sending Ctrl-Alt-Del to UML guest %d, waiting up to %s", cfg.ID, timeout)
	if _, err := d.Mconsole(ctx, cfg.ID, "cad"); err != nil {
		log.Printf("mconsole cad: %v", err)
	} else {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		gone := d.Proc.WaitGone(wctx, pid, mark(cfg.ID))
		cancel()
		if gone {
			d.waitRelay(ctx, cfg.ID, relay)
			d.cleanup(ctx, cfg.ID, s)
			log.Printf("UML guest %d shut down", cfg.ID)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Printf("UML guest %d still runs after %s: halting it", cfg.ID, timeout)
	}
	return d.Stop(ctx, cfg, log)
}

// Stop halts the kernel through mconsole at once (no clean shutdown of
// the guest's services), killing it if it does not go within 5 seconds.
func (d *Driver) Stop(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	if pid := d.pid(cfg.ID); pid != 0 {
		relay := d.relay(cfg.ID, pid)
		mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		mconsole.SendNoWait(mctx, d.MconsoleSocket(cfg.ID), "halt")
		cancel()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		gone := d.Proc.WaitGone(wctx, pid, mark(cfg.ID))
		cancel()
		if !gone {
			if err := d.kill(ctx, cfg.ID); err != nil {
				return err
			}
		}
		d.waitRelay(ctx, cfg.ID, relay)
		log.Printf("UML guest %d stopped", cfg.ID)
	}
	d.cleanup(ctx, cfg.ID, s)
	return nil
}

// Status reports running, paused (stopped through mconsole) or stopped.
func (d *Driver) Status(ctx context.Context, cfg api.Guest) (guest.State, error) {
	us, err := d.UMLStatus(ctx, cfg)
	if err != nil {
		return guest.State{Status: api.GuestUnknown}, err
	}
	st := guest.State{Status: us.Status, PID: us.PID, Details: map[string]string{}}
	if us.User != "" {
		st.Details["user"] = us.User
	}
	return st, nil
}

// UMLStatus reads the guest's state from its process and mconsole.
func (d *Driver) UMLStatus(ctx context.Context, cfg api.Guest) (api.UMLStatus, error) {
	s, err := d.spec(cfg)
	if err != nil {
		return api.UMLStatus{}, err
	}
	us := api.UMLStatus{ID: cfg.ID, Status: api.GuestStopped, MaxMemoryMiB: s.MemoryMiB}
	pid := d.pid(cfg.ID)
	if pid == 0 {
		return us, nil
	}
	us.PID, us.Status, us.Mconsole = pid, api.GuestRunning, d.MconsoleSocket(cfg.ID)
	if b, err := os.ReadFile(filepath.Join(d.dir(cfg.ID), "account")); err == nil {
		us.User = strings.TrimSpace(string(b))
	}
	if u, err := d.Proc.Usage(pid); err == nil {
		us.CPUSeconds, us.MemoryBytes, us.UptimeSeconds = u.CPUSeconds, u.RSSBytes, u.UptimeSeconds
	}
	if _, err := os.Stat(filepath.Join(d.dir(cfg.ID), "paused")); err == nil {
		us.Status = api.GuestPaused
		return us, nil
	}
	mctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if v, err := mconsole.Send(mctx, d.MconsoleSocket(cfg.ID), "version"); err == nil {
		us.Kernel = strings.TrimSpace(v)
	}
	return us, nil
}

// Destroy removes the guest's directory with its COW files; base images
// are left alone.
func (d *Driver) Destroy(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	if pid := d.pid(cfg.ID); pid != 0 {
		return fmt.Errorf("UML guest %d is running (PID %d): stop it first", cfg.ID, pid)
	}
	if s, errs := ParseSpec(cfg.Config); errs == nil {
		d.cleanup(ctx, cfg.ID, s)
	}
	if err := os.RemoveAll(d.dir(cfg.ID)); err != nil {
		return fmt.Errorf("remove UML guest %d: %w", cfg.ID, err)
	}
	log.Printf("removed %s", d.dir(cfg.ID))
	return nil
}

// Console attaches to the main console through the relay.
func (d *Driver) Console(ctx context.Context, cfg api.Guest) (io.ReadWriteCloser, error) {
	s, err := d.spec(cfg)
	if err != nil {
		return nil, err
	}
	if s.Console != "fd" {
		return nil, fmt.Errorf("the main console of UML guest %d is on %s, not berth's relay (console=fd): %w", cfg.ID, s.Console, guest.ErrNotSupported)
	}
	if d.pid(cfg.ID) == 0 {
		return nil, fmt.Errorf("UML guest %d is not running", cfg.ID)
	}
	var dl net.Dialer
	return dl.DialContext(ctx, "unix", filepath.Join(d.dir(cfg.ID), consoleSock))
}

// Exec is not supported.
func (d *Driver) Exec(ctx context.Context, cfg api.Guest, req guest.ExecRequest) (int, error) {
	return 0, fmt.Errorf("exec in a UML guest: use its console: %w", guest.ErrNotSupported)
}

// Adopt re-attaches to a guest that kept running; for one that is gone it
// clears leftovers.
func (d *Driver) Adopt(ctx context.Context, cfg api.Guest) (guest.State, error) {
	st, err := d.Status(ctx, cfg)
	if err == nil && st.Status == api.GuestStopped {
		if s, errs := ParseSpec(cfg.Config); errs == nil {
			d.cleanup(ctx, cfg.ID, s)
		}
	}
	return st, err
}

// Reboot reboots the guest's kernel through mconsole.
func (d *Driver) Reboot(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	if d.pid(cfg.ID) == 0 {
		return fmt.Errorf("UML guest %d is not running", cfg.ID)
	}
	os.Remove(filepath.Join(d.dir(cfg.ID), "paused"))
	if err := mconsole.SendNoWait(ctx, d.MconsoleSocket(cfg.ID), "reboot"); err != nil {
		return err
	}
	log.Printf("UML guest %d rebooting", cfg.ID)
	return nil
}

// Suspend freezes the kernel (mconsole stop); only mconsole answers until
// Resume.
func (d *Driver) Suspend(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	if _, err := d.Mconsole(ctx, cfg.ID, "stop"); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(d.dir(cfg.ID), "paused"), nil, 0o644)
	log.Printf("UML guest %d paused", cfg.ID)
	return nil
}

// Resume continues a paused guest (mconsole go).
func (d *Driver) Resume(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	if _, err := d.Mconsole(ctx, cfg.ID, "go"); err != nil {
		return err
	}
	os.Remove(filepath.Join(d.dir(cfg.ID), "paused"))
	log.Printf("UML guest %d resumed", cfg.ID)
	return nil
}

// Sysrq sends a magic SysRq key and returns the kernel's answer.
func (d *Driver) Sysrq(ctx context.Context, cfg api.Guest, key string) (string, error) {
	if len(key) != 1 || !strings.Contains("bcdefghijklmnopqrstuvwxyz0123456789", key) {
		return "", &guest.ValidationError{Fields: map[string]string{"key": fmt.Sprintf("%q: a SysRq key is one lowercase letter or digit", key)}}
	}
	return d.Mconsole(ctx, cfg.ID, "sysrq "+key)
}

// Commit merges the COW file of disk (diskN) into a new base image at
// image with uml_moo; the guest must be stopped and image must not exist.
func (d *Driver) Commit(ctx context.Context, cfg api.Guest, disk, image string, log guest.Logger) error {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	if disk == "" {
		disk = "disk0"
	}
	if err := d.resolve(ctx, &s); err != nil {
		return err
	}
	if d.pid(cfg.ID) != 0 {
		return fmt.Errorf("UML guest %d is running: shut it down before committing its COW file", cfg.ID)
	}
	if !filepath.IsAbs(image) {
		return &guest.ValidationError{Fields: map[string]string{"image": fmt.Sprintf("%q must be an absolute path", image)}}
	}
	if _, err := os.Stat(image); err == nil {
		return &guest.ValidationError{Fields: map[string]string{"image": image + " already exists: name a new file"}}
	}
	for _, dk := range s.Disks {
		if dk.Key != disk {
			continue
		}
		if !dk.COW {
			return &guest.ValidationError{Fields: map[string]string{"disk": disk + " is not a COW disk"}}
		}
		cow := d.cowPath(cfg.ID, dk)
		h, err := ReadCOWHeader(cow)
		if err != nil {
			return fmt.Errorf("%s has no usable COW file yet (boot the guest once): %w", disk, err)
		}
		if err := CheckBase(h, dk.Image); err != nil {
			return err
		}
		tmp := image + ".berth-tmp"
		os.Remove(tmp)
		out, err := exec.CommandContext(ctx, d.UmlMoo, "-b", dk.Image, cow, tmp).CombinedOutput()
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("uml_moo: %w: %s", err, strings.TrimSpace(string(out)))
		}
		f, err := os.Open(tmp)
		if err == nil {
			err = f.Sync()
			f.Close()
		}
		if err == nil {
			err = os.Rename(tmp, image)
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("commit %s: %w", image, err)
		}
		log.Printf("merged %s over %s into %s", cow, dk.Image, image)
		return nil
	}
	return &guest.ValidationError{Fields: map[string]string{"disk": fmt.Sprintf("guest %d has no %s", cfg.ID, disk)}}
}
