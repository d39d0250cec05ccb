// Package qemu is berth's driver for QEMU virtual machines: it creates
// their disks with qemu-img, runs QEMU daemonized (KVM when /dev/kvm is
// usable, TCG otherwise) with its QMP monitor, serial console and VNC
// display on unix sockets in the VM's directory, attaches NICs as taps in
// host bridges, and re-adopts running VMs through their pidfile and QMP
// socket after a daemon restart. It does not manage bridges or images.
package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/hostproc"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/qmp"
	"github.com/berthhq/berth/internal/tap"
)

// Driver runs QEMU VMs. Each VM lives in Root/<id>.
type Driver struct {
	// Root holds one directory per VM.
	Root string
	// QEMU and QemuImg are the binaries; empty means the ones on PATH.
	QEMU, QemuImg string
	// KVM is the KVM device; it is used when it can be opened.
	KVM string
	// OVMFCode and OVMFVars are the UEFI firmware and its variable
	// store template.
	OVMFCode, OVMFVars string
	// ROMDir holds the NICs' network boot ROMs that QEMU loads by
	// default (Debian's ipxe-qemu: efi-virtio.rom, efi-e1000.rom, each
	// iPXE for BIOS and UEFI); preflight checks they are there.
	ROMDir string
	// Images resolves image=NAME disks; the daemon sets it (SetImages).
	Images ImageSource
	Net    tap.Net
	Proc   hostproc.Proc
	Log    *slog.Logger
	// KSMAllowed tells whether the node lets guests' memory be merged
	// (its KSM mode is not off); nil means it does. A VM starts with
	// mem-merge=off when it does not or the VM says ksm=0.
	KSMAllowed func(context.Context) bool
}

// New returns a driver for VMs under root on the real host.
func New(root string, log *slog.Logger) *Driver {
	return &Driver{Root: root, QEMU: "qemu-system-x86_64", QemuImg: "qemu-img", KVM: "/dev/kvm",
		OVMFCode: "/usr/share/OVMF/OVMF_CODE_4M.fd", OVMFVars: "/usr/share/OVMF/OVMF_VARS_4M.fd", ROMDir: "/usr/lib/ipxe/qemu",
		Net: tap.Host, Proc: "/proc", Log: log}
}

var _ guest.Driver = (*Driver)(nil)

// ImageSource looks images up by name; *image.Store satisfies it.
type ImageSource interface {
	Get(ctx context.Context, name string) (api.Image, error)
}

// SetImages hands the driver the node's image store; the daemon calls it
// before serving requests.
func (d *Driver) SetImages(s *image.Store) { d.Images = s }

// ImagesOf returns the names of the images cfg's disks are overlays on, so
// the image store refuses to remove them.
func (d *Driver) ImagesOf(cfg api.Guest) []string {
	s, errs := ParseSpec(cfg.Config)
	if errs != nil {
		return nil
	}
	var names []string
	for _, dk := range s.Disks {
		if dk.Image != "" {
			names = append(names, dk.Image)
		}
	}
	return names
}

// resolve turns image=NAME disks into overlays on the image's bootable
// disk (qcow2, else raw), failing clearly when the image or the format is
// missing.
func (d *Driver) resolve(ctx context.Context, s *Spec) error {
	for i, dk := range s.Disks {
		if dk.Image == "" {
			continue
		}
		if d.Images == nil {
			return fmt.Errorf("%s: image=%s: this node has no image store", dk.Key, dk.Image)
		}
		img, err := d.Images.Get(ctx, dk.Image)
		if err != nil {
			return fmt.Errorf("%s: %w", dk.Key, err)
		}
		for _, f := range []string{api.ImageFormatQcow2, api.ImageFormatRaw} {
			if slices.Contains(img.Formats, f) {
				s.Disks[i].Backing = img.Paths[f]
				break
			}
		}
		if s.Disks[i].Backing == "" {
			return fmt.Errorf("%s: image %q has no bootable disk (it has %s): make one with 'berth image disk %s --format qcow2' "+
				"(the image needs a kernel: 'berth image build debian NAME --disk qcow2' builds one with it)",
				dk.Key, dk.Image, strings.Join(img.Formats, ", "), dk.Image)
		}
	}
	return nil
}

// Kind returns api.GuestVM.
func (d *Driver) Kind() api.GuestKind { return kind }

// Validate checks the VM options without touching the host.
func (d *Driver) Validate(cfg api.Guest) map[string]string {
	_, errs := ParseSpec(cfg.Config)
	return errs
}

// paths of one VM's files.
type paths struct{ dir, qmp, serial, vnc, pid, log, vars string }

func (d *Driver) paths(id int) paths {
	dir := filepath.Join(d.Root, strconv.Itoa(id))
	return paths{dir: dir, qmp: filepath.Join(dir, "qmp.sock"), serial: filepath.Join(dir, "serial.sock"),
		vnc: filepath.Join(dir, "vnc.sock"), pid: filepath.Join(dir, "qemu.pid"), log: filepath.Join(dir, "console.log"),
		vars: filepath.Join(dir, "efivars.fd")}
}

// ConsoleLog returns the file that records everything the VM wrote to its
// first serial port since its last start.
func (d *Driver) ConsoleLog(id int) string { return d.paths(id).log }

// diskPath is where a disk's image lives.
func (d *Driver) diskPath(id int, dk Disk) string {
	if dk.File != "" {
		return dk.File
	}
	return filepath.Join(d.paths(id).dir, dk.Key+".qcow2")
}

func tapName(id, index int) string { return fmt.Sprintf("tap%di%d", id, index) }

// mark identifies this VM's QEMU in /proc/PID/cmdline.
func mark(id int) string { return fmt.Sprintf("\x00berth-vm-%d\x00", id) }

func (d *Driver) spec(cfg api.Guest) (Spec, error) {
	if cfg.Kind != kind {
		return Spec{}, fmt.Errorf("guest %d is a %s, not a VM", cfg.ID, cfg.Kind)
	}
	s, errs := ParseSpec(cfg.Config)
	if errs != nil {
		return Spec{}, &guest.ValidationError{Fields: errs}
	}
	return s, nil
}

// preflight checks what must exist on the host before anything is made.
func (d *Driver) preflight(id int, s Spec, creating bool) error {
	for _, f := range []struct{ opt, path string }{{"kernel", s.Kernel}, {"initrd", s.Initrd}, {"cdrom", s.CDROM}} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("%s %s: not a readable file (%v): check the path", f.opt, f.path, errOr(err, "not a regular file"))
		}
	}
	for _, n := range s.NICs {
		if err := d.Net.BridgeExists(n.Bridge); err != nil {
			return fmt.Errorf("%s: %w", n.Key, err)
		}
	}
	for _, dk := range s.Disks {
		for _, p := range []string{dk.File, dk.Backing} {
			if p == "" {
				continue
			}
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("%s: image %s: %w", dk.Key, p, err)
			}
		}
		if !creating {
			if _, err := os.Stat(d.diskPath(id, dk)); err != nil {
				return fmt.Errorf("%s: %w (was the VM created by berth?)", dk.Key, err)
			}
		}
	}
	if slices.Contains(s.Boot, "net") {
		for _, n := range s.NICs {
			if _, err := os.Stat(d.romFile(n)); err != nil {
				return fmt.Errorf("%s: network boot needs the iPXE ROM for %s: %w (install Debian's ipxe-qemu)", n.Key, n.Model, err)
			}
		}
	}
	if s.BIOS == "ovmf" {
		for _, p := range []string{d.OVMFCode, d.OVMFVars} {
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("bios=ovmf: UEFI firmware %s missing (install Debian's ovmf package): %w", p, err)
			}
		}
	}
	p := d.paths(id)
	for _, sock := range []string{p.qmp, p.serial, p.vnc} {
		if len(sock) >= 108 {
			return fmt.Errorf("socket path %s is %d bytes, over the 107 a unix socket allows: use a shorter data directory", sock, len(sock))
		}
	}
	return nil
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// Create makes the VM's directory and disks. On failure it removes what
// it made.
func (d *Driver) Create(ctx context.Context, cfg api.Guest, log guest.Logger) (err error) {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	if err := d.resolve(ctx, &s); err != nil {
		return err
	}
	if err := d.preflight(cfg.ID, s, true); err != nil {
		return err
	}
	p := d.paths(cfg.ID)
	if err := os.MkdirAll(d.Root, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", d.Root, err)
	}
	if err := os.Mkdir(p.dir, 0o700); err != nil {
		return fmt.Errorf("create VM directory: %w (left over from an earlier VM %d? remove it)", err, cfg.ID)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(p.dir)
		}
	}()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(p.dir, &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", p.dir, err)
	}
	// Disks are thin, but one that can outgrow the free space would fail
	// the guest's writes later; refuse it now.
	free := int64(fs.Bavail) * int64(fs.Bsize)
	for _, dk := range s.Disks {
		if dk.File != "" {
			log.Printf("%s: using existing image %s (%s)", dk.Key, dk.File, dk.Format)
			continue
		}
		if dk.Size > free {
			return fmt.Errorf("%s: size %s is larger than the free space of the storage holding %s (%s free): choose a smaller size or free space",
				dk.Key, human(dk.Size), d.Root, human(free))
		}
		args := []string{"create", "-q", "-f", "qcow2"}
		if dk.Backing != "" {
			bi, err := imageInfo(ctx, d.QemuImg, dk.Backing)
			if err != nil {
				return fmt.Errorf("%s: %w", dk.Key, err)
			}
			if dk.Size != 0 && dk.Size < bi.VirtualSize {
				return fmt.Errorf("%s: size %s is smaller than its base %s (%s): give at least that or leave size= out",
					dk.Key, human(dk.Size), dk.Backing, human(bi.VirtualSize))
			}
			args = append(args, "-b", dk.Backing, "-F", bi.Format)
		}
		args = append(args, d.diskPath(cfg.ID, dk))
		if dk.Size > 0 {
			args = append(args, strconv.FormatInt(dk.Size, 10))
		}
		if out, err := exec.CommandContext(ctx, d.QemuImg, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: qemu-img %s: %w: %s", dk.Key, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		switch {
		case dk.Image != "":
			log.Printf("%s: qcow2 overlay on image %s (%s)", dk.Key, dk.Image, dk.Backing)
		case dk.Backing != "":
			log.Printf("%s: qcow2 overlay on %s", dk.Key, dk.Backing)
		default:
			log.Printf("%s: new qcow2 image of %s", dk.Key, human(dk.Size))
		}
	}
	if s.BIOS == "ovmf" {
		if err := copyFile(d.OVMFVars, p.vars); err != nil {
			return fmt.Errorf("UEFI variable store: %w", err)
		}
	}
	return nil
}

// diskInfo is what qemu-img info tells about a base image.
type diskInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

func imageInfo(ctx context.Context, qemuImg, path string) (diskInfo, error) {
	out, err := exec.CommandContext(ctx, qemuImg, "info", "-U", "--output=json", path).Output()
	if err != nil {
		return diskInfo{}, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	var info diskInfo
	if err := json.Unmarshal(out, &info); err != nil || info.Format == "" {
		return diskInfo{}, fmt.Errorf("qemu-img info %s: cannot tell the format", path)
	}
	return info, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func human(b int64) string {
	switch {
	case b >= 1<<40:
		return fmt.Sprintf("%.1fT", float64(b)/(1<<40))
	case b >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(b)/(1<<30))
	default:
		return fmt.Sprintf("%dM", b>>20)
	}
}

// useKVM reports whether /dev/kvm can be opened.
func (d *Driver) useKVM() bool {
	f, err := os.OpenFile(d.KVM, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Args returns QEMU's command line for a VM (without the binary).
func (d *Driver) Args(id int, s Spec, kvm bool) []string {
	p := d.paths(id)
	accel := "tcg"
	if kvm {
		accel = "kvm"
	}
	a := []string{"-name", fmt.Sprintf("berth-vm-%d", id),
		"-machine", "q35,accel=" + accel,
		"-m", strconv.Itoa(s.MemoryMiB), "-smp", strconv.Itoa(s.Cores),
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "std",
		"-vnc", "unix:" + p.vnc,
		"-chardev", fmt.Sprintf("socket,id=serial0,path=%s,server=on,wait=off,logfile=%s,logappend=off", p.serial, p.log),
		"-serial", "chardev:serial0",
		"-qmp", fmt.Sprintf("unix:%s,server=on,wait=off", p.qmp),
		"-pidfile", p.pid, "-daemonize",
	}
	// QEMU merges repeated -machine options; mem-merge decides whether
	// it madvises guest RAM MADV_MERGEABLE (internal/ksm).
	a = append(a, "-machine", ksm.QEMUMachineOption(s.Merge))
	if kvm {
		a = append(a, "-cpu", "host")
	}
	if s.BIOS == "ovmf" {
		a = append(a, "-drive", "if=pflash,format=raw,readonly=on,file="+d.OVMFCode,
			"-drive", "if=pflash,format=raw,file="+p.vars)
	}
	boot := bootIndexes(s)
	for _, dk := range s.Disks {
		a = append(a, "-drive", fmt.Sprintf("file=%s,if=none,format=%s,id=%s", d.diskPath(id, dk), dk.Format, dk.Key),
			"-device", "virtio-blk-pci,drive="+dk.Key+boot[dk.Key])
	}
	if s.CDROM != "" {
		a = append(a, "-drive", fmt.Sprintf("file=%s,media=cdrom,readonly=on,if=none,id=cdrom", s.CDROM),
			"-device", "ide-cd,drive=cdrom"+boot["cdrom"])
	}
	for _, n := range s.NICs {
		mac := n.MAC
		if mac == "" {
			mac = DefaultMAC(id, n.Index)
		}
		model := map[string]string{"virtio-net": "virtio-net-pci", "e1000": "e1000"}[n.Model]
		// A NIC the VM may boot from keeps QEMU's default ROM (iPXE from
		// ipxe-qemu, found on QEMU's firmware path; preflight checks it
		// is there). Naming it, even by the same file, would stop QEMU
		// patching the ROM's PCI IDs to the device's, and SeaBIOS then
		// skips it. The other NICs get none: no firmware tries them.
		rom := ",romfile="
		if boot[n.Key] != "" {
			rom = ""
		}
		a = append(a, "-netdev", fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", n.Key, tapName(id, n.Index)),
			"-device", fmt.Sprintf("%s,netdev=%s,mac=%s%s%s", model, n.Key, mac, rom, boot[n.Key]))
	}
	if s.Kernel != "" {
		a = append(a, "-kernel", s.Kernel)
		if s.Initrd != "" {
			a = append(a, "-initrd", s.Initrd)
		}
		if s.Append != "" {
			a = append(a, "-append", s.Append)
		}
	}
	return a
}

// romFile is the network boot ROM of a NIC's model.
func (d *Driver) romFile(n NIC) string {
	return filepath.Join(d.ROMDir, map[string]string{"virtio-net": "efi-virtio.rom", "e1000": "efi-e1000.rom"}[n.Model])
}

// bootIndexes gives each device the VM may boot from its ",bootindex=N"
// in the boot order (disks and NICs in their own order within their
// kind). SeaBIOS and OVMF both follow bootindex; QEMU's -boot order=
// letters reach SeaBIOS only.
func bootIndexes(s Spec) map[string]string {
	out := map[string]string{}
	add := func(key string) { out[key] = fmt.Sprintf(",bootindex=%d", len(out)+1) }
	for _, dev := range s.Boot {
		switch dev {
		case "disk":
			for _, dk := range s.Disks {
				add(dk.Key)
			}
		case "cdrom":
			if s.CDROM != "" {
				add("cdrom")
			}
		case "net":
			for _, n := range s.NICs {
				add(n.Key)
			}
		}
	}
	return out
}

func (d *Driver) pid(id int) int {
	pid, _ := hostproc.ReadPidfile(d.paths(id).pid)
	if pid > 0 && d.Proc.Alive(pid, mark(id)) {
		return pid
	}
	return 0
}

// Start boots the VM and returns once QEMU answers on QMP. On failure it
// leaves no tap, socket or process behind.
func (d *Driver) Start(ctx context.Context, cfg api.Guest, log guest.Logger) (err error) {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	if pid := d.pid(cfg.ID); pid != 0 {
		return fmt.Errorf("VM %d is already running (QEMU PID %d)", cfg.ID, pid)
	}
	if err := d.resolve(ctx, &s); err != nil {
		return err
	}
	if err := d.preflight(cfg.ID, s, false); err != nil {
		return err
	}
	d.cleanup(context.WithoutCancel(ctx), cfg.ID, s)
	defer func() {
		if err != nil {
			if pid := d.pid(cfg.ID); pid != 0 {
				d.Proc.Kill(context.WithoutCancel(ctx), pid, mark(cfg.ID))
			}
			d.cleanup(context.WithoutCancel(ctx), cfg.ID, s)
		}
	}()
	for _, n := range s.NICs {
		if err := d.Net.Create(ctx, tapName(cfg.ID, n.Index), n.Bridge, -1); err != nil {
			return fmt.Errorf("%s: %w", n.Key, err)
		}
		log.Printf("%s: tap %s in bridge %s", n.Key, tapName(cfg.ID, n.Index), n.Bridge)
	}
	kvm := d.useKVM()
	accel := "TCG (software emulation: no usable " + d.KVM + ")"
	if kvm {
		accel = "KVM"
	}
	if !s.Merge {
		log.Printf("memory not mergeable by KSM (ksm=0)")
	} else if d.KSMAllowed != nil && !d.KSMAllowed(ctx) {
		s.Merge = false
		log.Printf("memory not mergeable by KSM: KSM is disabled on this node (berth ksm disable)")
	}
	log.Printf("starting QEMU with %s, %d MiB, %d cores", accel, s.MemoryMiB, s.Cores)
	cmd := exec.CommandContext(ctx, d.QEMU, d.Args(cfg.ID, s, kvm)...)
	cmd.Dir = d.paths(cfg.ID).dir
	// QEMU daemonizes: the command returns once the VM is set up, and the
	// VM process, reparented away from the daemon, outlives it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("QEMU failed to start: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	pid := d.pid(cfg.ID)
	if pid == 0 {
		return fmt.Errorf("QEMU exited right after starting: %s (see %s)", strings.TrimSpace(stderr.String()), d.paths(cfg.ID).log)
	}
	qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := qmp.Dial(qctx, d.paths(cfg.ID).qmp)
	if err != nil {
		return fmt.Errorf("QEMU (PID %d) does not answer on QMP: %w", pid, err)
	}
	defer c.Close()
	st, err := c.QueryStatus(qctx)
	if err != nil {
		return err
	}
	log.Printf("VM %d %s (QEMU PID %d)", cfg.ID, st.Status, pid)
	return nil
}

// cleanup removes what a run leaves: taps, sockets, the pidfile.
func (d *Driver) cleanup(ctx context.Context, id int, s Spec) {
	for _, n := range s.NICs {
		if err := d.Net.Delete(ctx, tapName(id, n.Index)); err != nil && d.Log != nil {
			d.Log.Warn("remove tap", "vm", id, "err", err)
		}
	}
	p := d.paths(id)
	for _, f := range []string{p.qmp, p.serial, p.vnc, p.pid} {
		os.Remove(f)
	}
}

func (d *Driver) monitor(ctx context.Context, id int) (*qmp.Client, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return qmp.Dial(qctx, d.paths(id).qmp)
}

func (d *Driver) command(ctx context.Context, id int, cmd string, args any) error {
	if d.pid(id) == 0 {
		return fmt.Errorf("VM %d is not running", id)
	}
	c, err := d.monitor(ctx, id)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Execute(cctx, cmd, args, nil)
}

// Shutdown presses the ACPI power button and waits up to timeout for the
// guest to power off, then stops QEMU hard.
func (d *Driver) Shutdown(ctx context.Context, cfg api.Guest, timeout time.Duration, log guest.Logger) error {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	pid := d.pid(cfg.ID)
	if pid == 0 {
		d.cleanup(ctx, cfg.ID, s)
		log.Printf("VM %d is not running", cfg.ID)
		return nil
	}
	log.Printf("pressing the ACPI power button of VM %d, waiting up to %s", cfg.ID, timeout)
	if err := d.command(ctx, cfg.ID, "system_powerdown", nil); err != nil {
		log.Printf("power button: %v", err)
	} else {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		gone := d.Proc.WaitGone(wctx, pid, mark(cfg.ID))
		cancel()
		if gone {
			d.cleanup(ctx, cfg.ID, s)
			log.Printf("VM %d powered off", cfg.ID)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Printf("VM %d still runs after %s: stopping it hard", cfg.ID, timeout)
	}
	return d.Stop(ctx, cfg, log)
}

// Stop ends QEMU at once: QMP quit, then SIGKILL.
func (d *Driver) Stop(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	s, err := d.spec(cfg)
	if err != nil {
		return err
	}
	pid := d.pid(cfg.ID)
	if pid != 0 {
		if err := d.command(ctx, cfg.ID, "quit", nil); err != nil {
			log.Printf("QMP quit: %v; killing QEMU", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		gone := d.Proc.WaitGone(wctx, pid, mark(cfg.ID))
		cancel()
		if !gone {
			if err := d.Proc.Kill(ctx, pid, mark(cfg.ID)); err != nil {
				return err
			}
		}
		log.Printf("VM %d stopped", cfg.ID)
	}
	d.cleanup(ctx, cfg.ID, s)
	return nil
}

// Status reports running, paused or stopped.
func (d *Driver) Status(ctx context.Context, cfg api.Guest) (guest.State, error) {
	vs, err := d.VMStatus(ctx, cfg)
	if err != nil {
		return guest.State{Status: api.GuestUnknown}, err
	}
	st := guest.State{Status: vs.Status, PID: vs.PID, Details: map[string]string{}}
	if vs.QMPStatus != "" {
		st.Details["qmpstatus"] = vs.QMPStatus
		st.Details["accelerator"] = vs.Accelerator
	}
	return st, nil
}

// VMStatus reads the VM's state from QMP and /proc.
func (d *Driver) VMStatus(ctx context.Context, cfg api.Guest) (api.VMStatus, error) {
	s, err := d.spec(cfg)
	if err != nil {
		return api.VMStatus{}, err
	}
	vs := api.VMStatus{ID: cfg.ID, Status: api.GuestStopped, MaxMemoryMiB: s.MemoryMiB}
	pid := d.pid(cfg.ID)
	if pid == 0 {
		return vs, nil
	}
	vs.PID = pid
	vs.Status = api.GuestRunning
	if u, err := d.Proc.Usage(pid); err == nil {
		vs.CPUSeconds, vs.MemoryBytes, vs.UptimeSeconds = u.CPUSeconds, u.RSSBytes, u.UptimeSeconds
	}
	p := d.paths(cfg.ID)
	vs.VNC, vs.Serial = p.vnc, p.serial
	c, err := d.monitor(ctx, cfg.ID)
	if err != nil {
		vs.Status = api.GuestUnknown
		return vs, nil
	}
	defer c.Close()
	qs, err := c.QueryStatus(ctx)
	if err != nil {
		vs.Status = api.GuestUnknown
		return vs, nil
	}
	vs.QMPStatus = qs.Status
	switch qs.Status {
	case "running":
	case "shutdown":
		vs.Status = api.GuestStopped
	default:
		vs.Status = api.GuestPaused
	}
	vs.Accelerator = "tcg"
	if k, err := c.QueryKVM(ctx); err == nil && k.Enabled {
		vs.Accelerator = "kvm"
	}
	return vs, nil
}

// Destroy removes the VM's directory with the disks berth made; file=
// disks are left alone.
func (d *Driver) Destroy(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	if pid := d.pid(cfg.ID); pid != 0 {
		return fmt.Errorf("VM %d is running (PID %d): stop it first", cfg.ID, pid)
	}
	if s, errs := ParseSpec(cfg.Config); errs == nil {
		d.cleanup(ctx, cfg.ID, s)
	}
	if err := os.RemoveAll(d.paths(cfg.ID).dir); err != nil {
		return fmt.Errorf("remove VM %d: %w", cfg.ID, err)
	}
	log.Printf("removed %s", d.paths(cfg.ID).dir)
	return nil
}

// Console connects to the VM's first serial port.
func (d *Driver) Console(ctx context.Context, cfg api.Guest) (io.ReadWriteCloser, error) {
	if d.pid(cfg.ID) == 0 {
		return nil, fmt.Errorf("VM %d is not running", cfg.ID)
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", d.paths(cfg.ID).serial)
	if err != nil {
		return nil, fmt.Errorf("serial console of VM %d: %w", cfg.ID, err)
	}
	return c, nil
}

// Exec is not supported: berth has no guest agent channel yet.
func (d *Driver) Exec(ctx context.Context, cfg api.Guest, req guest.ExecRequest) (int, error) {
	return 0, fmt.Errorf("exec in a VM needs a guest agent: %w", guest.ErrNotSupported)
}

// Adopt re-attaches to a VM that survived a daemon restart; for a VM that
// is gone it clears leftover taps and sockets.
func (d *Driver) Adopt(ctx context.Context, cfg api.Guest) (guest.State, error) {
	st, err := d.Status(ctx, cfg)
	if err != nil {
		return st, err
	}
	if st.Status == api.GuestStopped {
		if s, errs := ParseSpec(cfg.Config); errs == nil {
			d.cleanup(ctx, cfg.ID, s)
		}
	}
	return st, nil
}

// Reboot resets the VM (like the reset button).
func (d *Driver) Reboot(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	if err := d.command(ctx, cfg.ID, "system_reset", nil); err != nil {
		return err
	}
	log.Printf("VM %d reset", cfg.ID)
	return nil
}

// Suspend pauses the VM's CPUs; memory stays allocated.
func (d *Driver) Suspend(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	if err := d.command(ctx, cfg.ID, "stop", nil); err != nil {
		return err
	}
	log.Printf("VM %d paused", cfg.ID)
	return nil
}

// Resume continues a paused VM.
func (d *Driver) Resume(ctx context.Context, cfg api.Guest, log guest.Logger) error {
	if err := d.command(ctx, cfg.ID, "cont", nil); err != nil {
		return err
	}
	log.Printf("VM %d resumed", cfg.ID)
	return nil
}

// errNoQcow2 is returned for snapshot work on a VM without qcow2 disks.
var errNoQcow2 = errors.New("the VM has no qcow2 disk to hold snapshots")
