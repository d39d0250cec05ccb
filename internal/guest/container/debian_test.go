package container_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest/container"
	"github.com/berthhq/berth/internal/guest/container/cttest"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/store"
)

// TestDebianImage runs a container from a debootstrap (bookworm minbase)
// image: real Debian userland, owned by root inside through the idmapped
// lower layer, and berth's minimal init since minbase has no /sbin/init.
func TestDebianImage(t *testing.T) {
	cttest.RequireRoot(t)
	if testing.Short() {
		t.Skip("builds a Debian image with debootstrap")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o711)
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	imgs, err := image.Open(ctx, st, filepath.Join(dir, "images"), nil, image.WithDebootstrapCache(imagetest.DebootstrapCache))
	if err != nil {
		t.Fatal(err)
	}
	debianMinbase(t, imgs, "bookworm")
	self, _ := os.Executable()
	d, err := container.New(container.Options{DataDir: dir, Store: st, Images: imgs, Self: self})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	e := &env{t: t, d: d, st: st, img: imgs, dir: dir}
	g := e.create(130, map[string]string{"image": "bookworm", "hostname": "deb"})
	e.start(g)
	out, code := e.run(g, "cat /etc/debian_version; id -u; stat -c %u:%g /usr/bin/apt-get; dpkg-query -W -f='${Status}\\n' dpkg; cat /proc/1/cmdline | tr '\\0' ' '; echo; touch /var/tmp/x && echo writable")
	if code != 0 {
		t.Fatalf("commands in the Debian container: %d\n%s", code, out)
	}
	for _, want := range []string{"12.", "\n0\n", "0:0", "install ok installed", "writable"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	start := time.Now()
	if err := d.Shutdown(ctx, g, 20*time.Second, cttest.Logger{T: t}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("berth's minimal init took %s to shut down", time.Since(start))
	}
	if s := e.status(g); s != api.GuestStopped {
		t.Errorf("status %s after shutdown", s)
	}
}

// debianMinbase imports a bookworm minbase image, from a tarball cached in
// imagetest.ImageCache when there is one, else built with debootstrap
// (packages cached too) and then cached, so reruns take seconds.
func debianMinbase(t *testing.T, imgs *image.Store, name string) {
	t.Helper()
	cached := filepath.Join(imagetest.ImageCache, "debian-bookworm-minbase.tar.gz")
	if _, err := os.Stat(cached); err == nil {
		if _, err := imgs.Import(context.Background(), name, cached, imagetest.Logger{T: t}); err == nil {
			return
		}
		t.Logf("cached image %s unusable: rebuilding", cached)
		imgs.Remove(context.Background(), name)
	}
	imagetest.Debian(t, imgs, name)
	root, err := imgs.RootFS(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(imagetest.ImageCache, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := cached + ".tmp"
	if out, err := exec.Command("tar", "-czpf", tmp, "--numeric-owner", "-C", root, ".").CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Logf("caching the image failed (next run rebuilds): %v %s", err, out)
		return
	}
	if err := os.Rename(tmp, cached); err != nil {
		t.Log(err)
	}
}
