package vmtest

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/store"
)

// RootEntries is the test guests' root file system: imagetest's busybox
// root (the one container tests use) with the boot script described at
// rcScript as /etc/rc and an inittab that runs it. With a kernel, /boot
// holds Debian's kernel and an initramfs (see Initramfs), so that berth
// image disk makes a bootable disk of it.
func RootEntries(k *Kernel, tmp string) ([]imagetest.Entry, error) {
	es, err := imagetest.BusyboxEntries(imagetest.BusyboxPath)
	if err != nil {
		return nil, err
	}
	es = append(es,
		imagetest.Entry{Name: "etc/rc", Mode: 0o755, Body: rcScript},
		imagetest.Entry{Name: "etc/inittab", Body: inittab},
		imagetest.Entry{Name: "marks/", Type: tar.TypeDir})
	if k == nil {
		return es, nil
	}
	ver := filepath.Base(k.Modules)
	vmlinuz, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(tmp, "initrd.img")
	if err := Initramfs(*k, initrd); err != nil {
		return nil, err
	}
	defer os.Remove(initrd)
	ird, err := os.ReadFile(initrd)
	if err != nil {
		return nil, err
	}
	return append(es, imagetest.Entry{Name: "boot/", Type: tar.TypeDir},
		imagetest.Entry{Name: "boot/vmlinuz-" + ver, Body: string(vmlinuz)},
		imagetest.Entry{Name: "boot/initrd.img-" + ver, Body: string(ird)}), nil
}

// RootTar writes RootEntries as DIR/root.tar, for berth image import;
// withKernel adds Debian's kernel (downloaded once into CacheDir).
func RootTar(dir string, withKernel bool) (string, error) {
	var k *Kernel
	if withKernel {
		kk, err := DebianKernel()
		if err != nil {
			return "", err
		}
		k = &kk
	}
	es, err := RootEntries(k, dir)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "root.tar")
	return p, imagetest.WriteTarFile(p, es)
}

// OpenStore opens an image store in dir/images with its records in
// dir/images.db; close releases the database.
func OpenStore(ctx context.Context, dir string) (s *image.Store, close func(), err error) {
	st, err := store.Open(filepath.Join(dir, "images.db"))
	if err != nil {
		return nil, nil, err
	}
	s, err = image.Open(ctx, st, filepath.Join(dir, "images"), nil)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return s, func() { st.Close() }, nil
}

type discard struct{}

func (discard) Printf(string, ...any) {}

// Image imports the test root into s as name with berth's image import
// and derives the disk formats with berth's image disk code (MakeDisks):
// "ext4" for UML guests, "qcow2"/"raw" (bootable: needs withKernel) for
// VMs, appendArgs added to the bootable disk's kernel command line.
func Image(ctx context.Context, s *image.Store, name, dir string, withKernel bool, appendArgs string, formats ...string) (api.Image, error) {
	tarball, err := RootTar(dir, withKernel)
	if err != nil {
		return api.Image{}, err
	}
	defer os.Remove(tarball)
	if _, err := s.Import(ctx, name, tarball, discard{}); err != nil {
		return api.Image{}, fmt.Errorf("import test root: %w", err)
	}
	img, err := s.MakeDisks(ctx, name, image.DiskOptions{Formats: formats, Append: appendArgs}, discard{})
	if err != nil {
		return api.Image{}, fmt.Errorf("derive %s disks: %w", strings.Join(formats, ", "), err)
	}
	return img, nil
}
