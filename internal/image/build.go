package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berthhq/berth/api"
)

// Build defaults.
const (
	DefaultSuite   = "bookworm"
	DefaultVariant = "minbase"
	DefaultMirror  = "http://deb.debian.org/debian"
)

// BuildOptions choose what debootstrap installs.
type BuildOptions struct {
	// Suite is the Debian suite (default bookworm).
	Suite string
	// Variant is debootstrap's --variant (default minbase); "-" is the
	// standard variant.
	Variant string
	// Include lists extra packages.
	Include []string
	// Mirror is the archive URL (default http://deb.debian.org/debian).
	Mirror string
	// VMInitramfs pre-seeds initramfs-tools with a short module list
	// (virtio, SATA/SCSI, ext4) instead of MODULES=most: a small initramfs
	// for VMs that builds in seconds rather than minutes. Set for builds
	// with bootable disks.
	VMInitramfs bool
}

// vmModules are the modules a VM initramfs needs to find an ext4 root on
// virtio, SATA, IDE or SCSI disks.
var vmModules = []string{"virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "sd_mod", "sr_mod",
	"ahci", "ata_piix", "ata_generic", "ext4", "crc32c_generic"}

// seedInitramfs writes initramfs-tools configuration into an empty target
// before debootstrap: the files are not the package's conffiles (conf.d)
// or are kept by dpkg's --force-confold (modules).
func seedInitramfs(root string) error {
	dir := filepath.Join(root, "etc/initramfs-tools")
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "conf.d/berth-vm.conf"), []byte("# written by berth image build: a small initramfs for VMs\nMODULES=list\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "modules"), []byte("# written by berth image build\n"+strings.Join(vmModules, "\n")+"\n"), 0o644)
}

var (
	suiteRE = regexp.MustCompile(`^[a-z][a-z0-9-]{1,30}$`)
	pkgRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
)

// Normalize fills in defaults and validates the options, so that a bad
// request fails before a task starts.
func (o *BuildOptions) Normalize() error {
	if o.Suite == "" {
		o.Suite = DefaultSuite
	}
	if o.Variant == "" {
		o.Variant = DefaultVariant
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror
	}
	bad := map[string]string{}
	if !suiteRE.MatchString(o.Suite) {
		bad["suite"] = fmt.Sprintf("%q is not a Debian suite name (e.g. bookworm, trixie, stable)", o.Suite)
	}
	if !slices.Contains([]string{"minbase", "buildd", "fakechroot", "-"}, o.Variant) {
		bad["variant"] = fmt.Sprintf("%q: use minbase, buildd, fakechroot or - (standard)", o.Variant)
	}
	if u, err := url.Parse(o.Mirror); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") || (u.Scheme != "file" && u.Host == "") {
		bad["mirror"] = fmt.Sprintf("%q: give an http://, https:// or file:// URL of a Debian archive", o.Mirror)
	}
	for _, p := range o.Include {
		if !pkgRE.MatchString(p) {
			bad["include"] = fmt.Sprintf("%q is not a Debian package name", p)
		}
	}
	if len(bad) > 0 {
		return &InvalidError{Msg: "invalid image build request", Fields: bad}
	}
	o.Include = slices.Compact(slices.Sorted(slices.Values(o.Include)))
	return nil
}

// cacheKey names the package tarball of a suite/variant/package list.
func (o BuildOptions) cacheKey() string {
	h := sha256.Sum256([]byte(o.Mirror + "\n" + strings.Join(o.Include, ",")))
	v := o.Variant
	if v == "-" {
		v = "standard"
	}
	return fmt.Sprintf("debootstrap-%s-%s-%s.tgz", o.Suite, v, hex.EncodeToString(h[:6]))
}

// Build makes an image with debootstrap, streaming its output into log.
// With a debootstrap cache (WithDebootstrapCache) the downloaded packages
// are kept as a tarball per suite, variant, mirror and package list and
// reused, so rebuilding needs no network. A failed build leaves nothing.
func (s *Store) Build(ctx context.Context, name string, o BuildOptions, log Logger) (api.Image, error) {
	if err := o.Normalize(); err != nil {
		return api.Image{}, err
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return api.Image{}, fmt.Errorf("debootstrap is not installed: apt-get install debootstrap")
	}
	w, done, err := s.begin(ctx, name)
	if err != nil {
		return api.Image{}, err
	}
	defer done()
	args := []string{"--variant=" + o.Variant}
	if o.Variant == "-" {
		args = nil
	}
	if len(o.Include) > 0 {
		args = append(args, "--include="+strings.Join(o.Include, ","))
	}
	if s.debCache != "" {
		if err := os.MkdirAll(s.debCache, 0o755); err != nil {
			return api.Image{}, fmt.Errorf("debootstrap cache: %w", err)
		}
		tarball := filepath.Join(s.debCache, o.cacheKey())
		if _, err := os.Stat(tarball); err != nil {
			log.Printf("downloading packages into the cache %s", tarball)
			tmp := tarball + ".tmp"
			dl := filepath.Join(w.dir, "download")
			mk := append(slices.Clone(args), "--make-tarball="+tmp, o.Suite, dl, o.Mirror)
			if err := runLogged(ctx, log, "debootstrap", mk...); err != nil {
				os.Remove(tmp)
				return api.Image{}, fmt.Errorf("debootstrap --make-tarball: %w", err)
			}
			if err := os.Rename(tmp, tarball); err != nil {
				return api.Image{}, err
			}
			_ = removeTree(dl)
		} else {
			log.Printf("using cached packages %s", tarball)
		}
		args = append(args, "--unpack-tarball="+tarball)
	}
	if o.VMInitramfs {
		if err := seedInitramfs(w.rootfs()); err != nil {
			return api.Image{}, fmt.Errorf("seed initramfs config: %w", err)
		}
		log.Printf("initramfs for VMs: MODULES=list (%s)", strings.Join(vmModules, " "))
	}
	args = append(args, o.Suite, w.rootfs(), o.Mirror)
	log.Printf("debootstrap %s", strings.Join(args, " "))
	if err := runLogged(ctx, log, "debootstrap", args...); err != nil {
		return api.Image{}, fmt.Errorf("debootstrap: %w", err)
	}
	// An image must not carry the builder's identity or caches.
	for _, p := range []string{"etc/machine-id", "var/lib/dbus/machine-id"} {
		if fi, err := os.Lstat(filepath.Join(w.rootfs(), p)); err == nil && fi.Mode().IsRegular() {
			_ = os.WriteFile(filepath.Join(w.rootfs(), p), nil, 0o444)
		}
	}
	_ = os.RemoveAll(filepath.Join(w.rootfs(), "var/cache/apt/archives"))
	_ = os.MkdirAll(filepath.Join(w.rootfs(), "var/cache/apt/archives/partial"), 0o755)
	img := api.Image{SourceType: SourceDebootstrap, Source: fmt.Sprintf("debootstrap %s/%s %s", o.Suite, o.Variant, o.Mirror)}
	if len(o.Include) > 0 {
		img.Source += " +" + strings.Join(o.Include, ",")
	}
	return w.commit(ctx, img, log)
}

// runLogged runs a command, copying each line of its output into log.
func runLogged(ctx context.Context, log Logger, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8")
	// Its own process group, killed whole on cancellation: debootstrap
	// runs dpkg and maintainer scripts that would outlive their parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var wg sync.WaitGroup
	var last []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			log.Printf("%s", line)
			last = append(last, line)
			if len(last) > 5 {
				last = last[1:]
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("%s failed: %w (last output: %s)", name, err, strings.Join(last, " | "))
	}
	return nil
}
