package image

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/store"
)

// Files the bootable disks need on the node (Debian's extlinux and
// syslinux-common).
const (
	GPTMBRPath = "/usr/lib/syslinux/mbr/gptmbr.bin"
	// diskOffset is where the root partition starts: 1 MiB.
	diskOffset = 1 << 20
)

// DiskOptions choose the derived disk images of an image.
type DiskOptions struct {
	// Formats are "ext4", "raw" and/or "qcow2".
	Formats []string
	// Size is the disk (and ext4 image) size such as "2G" or "512M";
	// empty means the root's size plus headroom.
	Size string
	// Append is added to the kernel command line of bootable disks.
	Append string

	bytes int64
}

// ParseSize reads a size such as "4G", "512M", "1T" or a byte count.
// Suffixes are binary (K=1024).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	num := s
	if mult > 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("%q is not a size: use a number with K, M, G or T, e.g. 4G", s)
	}
	return n * mult, nil
}

func (o *DiskOptions) normalize() error {
	bad := map[string]string{}
	var fs []string
	for _, f := range o.Formats {
		switch f {
		case api.ImageFormatExt4, api.ImageFormatRaw, api.ImageFormatQcow2:
			if !slices.Contains(fs, f) {
				fs = append(fs, f)
			}
		default:
			bad["formats"] = fmt.Sprintf("%q: use ext4, raw or qcow2", f)
		}
	}
	o.Formats = fs
	if o.Size != "" {
		n, err := ParseSize(o.Size)
		if err != nil {
			bad["size"] = err.Error()
		} else if n < 16<<20 {
			bad["size"] = fmt.Sprintf("%s is too small: at least 16M", o.Size)
		}
		o.bytes = n
	}
	if strings.ContainsAny(o.Append, "\n\r") {
		bad["append"] = "must be one line"
	}
	if len(bad) > 0 {
		return &InvalidError{Msg: "invalid disk image request", Fields: bad}
	}
	return nil
}

func (o DiskOptions) bootable() bool {
	return slices.Contains(o.Formats, api.ImageFormatRaw) || slices.Contains(o.Formats, api.ImageFormatQcow2)
}

// checkTools reports a missing program or file the formats need.
func (o DiskOptions) checkTools() error {
	need := []string{"mkfs.ext4"}
	if o.bootable() {
		need = append(need, "sgdisk", "extlinux", "mount", "umount")
	}
	if slices.Contains(o.Formats, api.ImageFormatQcow2) {
		need = append(need, "qemu-img")
	}
	for _, t := range need {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is not installed on the node: apt-get install e2fsprogs gdisk extlinux syslinux-common qemu-utils", t)
		}
	}
	if o.bootable() {
		if _, err := os.Stat(GPTMBRPath); err != nil {
			return fmt.Errorf("%s is missing: apt-get install syslinux-common", GPTMBRPath)
		}
	}
	return nil
}

// BootPackages are added to a debootstrap build that asks for bootable
// disks: a kernel (with its initramfs) and an init system.
var BootPackages = []string{"linux-image-amd64", "systemd-sysv"}

// CheckBuild validates a build request (name, options, disks) without
// starting it; bootable disks add BootPackages to the build.
func (s *Store) CheckBuild(ctx context.Context, name string, o *BuildOptions, d *DiskOptions) error {
	if err := s.CheckNew(ctx, name); err != nil {
		return err
	}
	if err := d.normalize(); err != nil {
		return err
	}
	if d.bootable() {
		o.Include = append(o.Include, BootPackages...)
		o.VMInitramfs = true
	}
	if err := o.Normalize(); err != nil {
		return err
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errors.New("debootstrap is not installed on the node: apt-get install debootstrap")
	}
	return d.checkTools()
}

// CheckDisks validates a disk request for an existing image.
func (s *Store) CheckDisks(ctx context.Context, name string, d *DiskOptions) error {
	img, err := s.Get(ctx, name)
	if err != nil {
		return err
	}
	if err := d.normalize(); err != nil {
		return err
	}
	if len(d.Formats) == 0 {
		return invalid("formats", "name at least one of ext4, raw, qcow2")
	}
	if d.bootable() && img.Kernel == "" {
		return invalid("formats", fmt.Sprintf("image %q has no kernel (/boot/vmlinuz-*), so it cannot boot from a disk: build it with --include linux-image-amd64 (berth image build debian NAME --disk raw does)", name))
	}
	// Guests' qcow2 overlays and UML COW files depend on the exact bytes
	// (and, for COW files, the mtime) of the disks they were made on:
	// replacing a disk under them would corrupt them silently.
	var replace []string
	for _, f := range d.Formats {
		if slices.Contains(img.Formats, f) {
			replace = append(replace, f)
		}
	}
	if len(replace) > 0 {
		var iu *InUseError
		if err := s.checkDisksInUse(ctx, name); errors.As(err, &iu) {
			iu.Detail = fmt.Sprintf("its %s disk would be replaced under their overlays and COW files: destroy them first, or import the image under a new name", strings.Join(replace, ", "))
			return iu
		} else if err != nil {
			return err
		}
	}
	return d.checkTools()
}

// MakeDisks derives disk images from an image: an ext4 file system image of
// the root (mkfs.ext4 -d, nothing mounted), and a bootable GPT disk (raw
// and/or qcow2) whose one partition holds the root with extlinux and the
// image's kernel. The files are written beside the image, made read-only and
// added to its formats; existing ones are replaced.
func (s *Store) MakeDisks(ctx context.Context, name string, o DiskOptions, log Logger) (api.Image, error) {
	if err := s.CheckDisks(ctx, name, &o); err != nil {
		return api.Image{}, err
	}
	release, err := s.reserve(name)
	if err != nil {
		return api.Image{}, err
	}
	defer release()
	img, err := s.Get(ctx, name)
	if err != nil {
		return api.Image{}, err
	}
	dir := filepath.Join(s.dir, name)
	rootfs := s.formatPath(name, api.ImageFormatRootFS)
	size := o.bytes
	if size == 0 {
		size = autoSize(img)
	}
	tmp, err := os.MkdirTemp(dir, tmpPrefix+"disk-")
	if err != nil {
		return api.Image{}, err
	}
	defer removeTree(tmp)
	made := map[string]string{}
	if slices.Contains(o.Formats, api.ImageFormatExt4) {
		p := filepath.Join(tmp, "root.ext4")
		log.Printf("making ext4 root image (%s)", humanBytes(size))
		if err := mkfsExt4(ctx, log, rootfs, p, 0, size-diskOffset); err != nil {
			return api.Image{}, err
		}
		made[api.ImageFormatExt4] = p
	}
	if o.bootable() {
		raw := filepath.Join(tmp, "disk.raw")
		log.Printf("making bootable disk (%s): GPT, extlinux, kernel %s", humanBytes(size), img.Kernel)
		if err := s.makeBootDisk(ctx, log, img, rootfs, raw, filepath.Join(tmp, "mnt"), size, o.Append); err != nil {
			return api.Image{}, err
		}
		if slices.Contains(o.Formats, api.ImageFormatRaw) {
			made[api.ImageFormatRaw] = raw
		}
		if slices.Contains(o.Formats, api.ImageFormatQcow2) {
			q := filepath.Join(tmp, "disk.qcow2")
			log.Printf("converting to qcow2")
			if err := runLogged(ctx, log, "qemu-img", "convert", "-O", "qcow2", raw, q); err != nil {
				return api.Image{}, err
			}
			made[api.ImageFormatQcow2] = q
		}
	}
	for _, f := range o.Formats {
		p := made[f]
		if err := os.Chmod(p, 0o444); err != nil {
			return api.Image{}, err
		}
		if f, err := os.Open(p); err == nil {
			err = f.Sync()
			f.Close()
			if err != nil {
				return api.Image{}, fmt.Errorf("sync %s: %w", p, err)
			}
		}
	}
	// Replace existing files, then record: a crash in between leaves an
	// unrecorded file, which is harmless and replaced by the next build.
	for f, p := range made {
		if err := os.Rename(p, s.formatPath(name, f)); err != nil {
			return api.Image{}, err
		}
	}
	if err := syncDir(dir); err != nil {
		return api.Image{}, err
	}
	for {
		r, digest, err := store.GetJSON[record](ctx, s.st, s.key(name))
		if err != nil {
			return api.Image{}, err
		}
		for f := range made {
			if !slices.Contains(r.Formats, f) {
				r.Formats = append(r.Formats, f)
			}
		}
		_, err = store.PutJSON(ctx, s.st, s.key(name), r, store.Cond{Digest: digest})
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return api.Image{}, err
		}
		for f := range made {
			log.Printf("%s: %s", f, s.formatPath(name, f))
		}
		return s.fill(r.Image), nil
	}
}

// autoSize is the root's size with room for file system metadata, one
// block per entry and 25% free space, rounded up to a MiB.
func autoSize(img api.Image) int64 {
	n := img.Size + img.Files*4096
	n = n + n/4 + 64<<20 + diskOffset
	return (n + 1<<20 - 1) &^ (1<<20 - 1)
}

// mkfsExt4 makes an ext4 file system of size bytes holding root, at offset
// in file. Features extlinux cannot read (64bit) are left off.
func mkfsExt4(ctx context.Context, log Logger, root, file string, offset, size int64) error {
	args := []string{"-q", "-F", "-t", "ext4", "-L", "berthroot", "-O", "^64bit", "-d", root}
	if offset > 0 {
		args = append(args, "-E", fmt.Sprintf("offset=%d", offset))
	}
	args = append(args, file, fmt.Sprintf("%dk", size/1024))
	return runLogged(ctx, log, "mkfs.ext4", args...)
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// makeBootDisk writes a GPT disk whose one partition (legacy BIOS
// bootable) holds the root file system with extlinux: syslinux's GPT MBR
// loads extlinux, which boots the image's kernel and initrd with
// root=PARTUUID=….
func (s *Store) makeBootDisk(ctx context.Context, log Logger, img api.Image, rootfs, raw, mnt string, size int64, appendArgs string) error {
	f, err := os.OpenFile(raw, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return err
	}
	partUUID := newGUID()
	// Partition 1 from 1 MiB to the end (sgdisk leaves the backup GPT).
	if err := runLogged(ctx, log, "sgdisk", "-o", "-n", "1:2048:0", "-t", "1:8300", "-c", "1:berth-root",
		"-u", "1:"+partUUID, "-A", "1:set:2", raw); err != nil {
		return err
	}
	end, err := partitionEnd(ctx, raw)
	if err != nil {
		return err
	}
	fsSize := end - diskOffset
	if err := mkfsExt4(ctx, log, rootfs, raw, diskOffset, fsSize); err != nil {
		return err
	}
	mbr, err := os.ReadFile(GPTMBRPath)
	if err != nil {
		return err
	}
	if len(mbr) > 440 {
		mbr = mbr[:440]
	}
	df, err := os.OpenFile(raw, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = df.WriteAt(mbr, 0)
	if cerr := df.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write MBR boot code: %w", err)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return err
	}
	// A loop mount with autoclear: umount frees the loop device; a crash
	// leaves a mount under .tmp-*, which Open detaches.
	if err := runLogged(ctx, log, "mount", "-t", "ext4", "-o", fmt.Sprintf("loop,offset=%d,sizelimit=%d", diskOffset, fsSize), raw, mnt); err != nil {
		return fmt.Errorf("mount the new root partition: %w", err)
	}
	mounted := true
	defer func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
	}()
	// extlinux reads files with its own ext4 code, which fails on holes
	// ("Loading … failed: I/O error"); imports write files sparse and
	// mkfs.ext4 -d keeps the holes, so the files it loads are rewritten
	// in full.
	for _, f := range []string{img.Kernel, img.Initrd} {
		if f == "" {
			continue
		}
		if err := unsparse(filepath.Join(mnt, f)); err != nil {
			return fmt.Errorf("boot file %s: %w", f, err)
		}
	}
	args := "root=PARTUUID=" + strings.ToLower(partUUID) + " ro console=tty0 console=ttyS0,115200"
	if appendArgs != "" {
		args += " " + appendArgs
	}
	conf := fmt.Sprintf("# written by berth image disk\nDEFAULT berth\nPROMPT 0\nTIMEOUT 0\nSERIAL 0 115200\n\nLABEL berth\n  LINUX %s\n", img.Kernel)
	if img.Initrd != "" {
		conf += "  INITRD " + img.Initrd + "\n"
	}
	conf += "  APPEND " + args + "\n"
	if err := os.MkdirAll(filepath.Join(mnt, "boot/extlinux"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(mnt, "boot/extlinux/extlinux.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	fstab := "# written by berth image disk\nPARTUUID=" + strings.ToLower(partUUID) + " / ext4 defaults,errors=remount-ro 0 1\n"
	if err := os.WriteFile(filepath.Join(mnt, "etc/fstab"), []byte(fstab), 0o644); err != nil {
		return err
	}
	if err := runLogged(ctx, log, "extlinux", "--install", filepath.Join(mnt, "boot/extlinux")); err != nil {
		return err
	}
	mounted = false
	if err := runLogged(ctx, log, "umount", mnt); err != nil {
		return err
	}
	return runLogged(ctx, log, "sgdisk", "-v", raw)
}

// partitionEnd returns the byte offset just past partition 1.
func partitionEnd(ctx context.Context, raw string) (int64, error) {
	out, err := exec.CommandContext(ctx, "sgdisk", "-i", "1", raw).Output()
	if err != nil {
		return 0, fmt.Errorf("sgdisk -i 1: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Last sector: "); ok {
			n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("sgdisk: last sector %q: %w", v, err)
			}
			return (n + 1) * 512, nil
		}
	}
	return 0, fmt.Errorf("sgdisk -i 1: no last sector in %q", out)
}

// unsparse rewrites a file with every block allocated (no holes), keeping
// its mode, owner and modification time.
func unsparse(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	in, err := os.Open(p)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := p + ".berth-tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	// io.Copy through a plain buffer writes the zeros too.
	_, err = io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		err = os.Chown(tmp, int(st.Uid), int(st.Gid))
	}
	if err == nil {
		err = os.Chmod(tmp, fi.Mode())
	}
	if err == nil {
		err = os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
