package esp

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthhq/berth/internal/gpt"
)

// needTools skips when the Debian tools the tests drive are missing, and
// fails instead under BERTH_TEST_ROOT=1, where `make test` installed them.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("BERTH_TEST_ROOT") == "1" {
				t.Fatalf("%s not found: make test installs deps/boot.debs", tool)
			}
			t.Skipf("%s not found (install deps/boot.debs or run make test)", tool)
		}
	}
}

// fixture is a fake host: a root tree, a sysfs and /dev that describe
// disk image files as if they were loop devices, and a procfs.
type fixture struct {
	dir                  string
	root, sys, dev, proc string
	stdout, stderr       bytes.Buffer
	disks                map[string]string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	needTools(t, "sgdisk", "mkfs.fat", "fsck.fat", "mcopy")
	d := t.TempDir()
	f := &fixture{dir: d, root: filepath.Join(d, "root"), sys: filepath.Join(d, "sys"), dev: filepath.Join(d, "dev"), proc: filepath.Join(d, "proc"), disks: map[string]string{}}
	for _, p := range []string{f.root + "/boot", f.root + "/etc/kernel", f.sys + "/class/block", f.sys + "/block", f.dev, f.proc + "/self", f.proc + "/sys/kernel"} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, f.proc+"/self/mountinfo", "")
	write(t, f.proc+"/sys/kernel/osrelease", "6.6.6-host\n")
	write(t, f.proc+"/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda3 ro quiet\n")
	write(t, f.root+"/etc/kernel/cmdline", "root=/dev/vda3 console=ttyS0\n")
	return f
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// disk creates a GPT disk image named like a loop device with sgdisk
// partition specs ("size:type", e.g. "1M:EF02"), and its sysfs entries.
func (f *fixture) disk(t testing.TB, name string, sizeMiB int, parts ...string) string {
	t.Helper()
	img := filepath.Join(f.dev, name)
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(sizeMiB)<<20); err != nil {
		t.Fatal(err)
	}
	args := []string{"-o"}
	for i, p := range parts {
		size, typ, _ := strings.Cut(p, ":")
		end := "+" + size
		if size == "rest" {
			end = "0"
		}
		args = append(args, fmt.Sprintf("-n%d:0:%s", i+1, end), fmt.Sprintf("-t%d:%s", i+1, typ))
	}
	run(t, "sgdisk", append(args, img)...)
	f.disks[name] = img
	f.rescan(t, name)
	return img
}

// rescan writes the sysfs entries of a disk's partitions from its GPT, as
// the kernel would after partprobe.
func (f *fixture) rescan(t testing.TB, name string) {
	t.Helper()
	fh, err := os.Open(f.disks[name])
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	tab, err := gpt.Read(fh, 512)
	if err != nil {
		t.Fatal(err)
	}
	diskDir := filepath.Join(f.sys, "block", name)
	os.RemoveAll(diskDir)
	write(t, diskDir+"/dev", "7:0\n")
	os.Remove(filepath.Join(f.sys, "class/block", name))
	if err := os.Symlink("../../block/"+name, filepath.Join(f.sys, "class/block", name)); err != nil {
		t.Fatal(err)
	}
	for _, p := range tab.Partitions {
		pn := fmt.Sprintf("%sp%d", name, p.Number)
		pd := filepath.Join(diskDir, pn)
		write(t, pd+"/partition", fmt.Sprintf("%d\n", p.Number))
		write(t, pd+"/start", fmt.Sprintf("%d\n", p.FirstLBA))
		write(t, pd+"/size", fmt.Sprintf("%d\n", p.LastLBA-p.FirstLBA+1))
		write(t, pd+"/dev", fmt.Sprintf("259:%d\n", p.Number))
		link := filepath.Join(f.sys, "class/block", pn)
		os.Remove(link)
		if err := os.Symlink("../../block/"+name+"/"+pn, link); err != nil {
			t.Fatal(err)
		}
		// The partition node: a placeholder file, so the path exists.
		write(t, filepath.Join(f.dev, pn), "")
	}
}

func (f *fixture) tool(t testing.TB) *Tool {
	tl := New(f.root, &f.stdout, &f.stderr, slog.New(slog.NewTextHandler(io.Discard, nil)))
	tl.Sys, tl.Dev, tl.Proc = f.sys, f.dev, f.proc
	return tl
}

// kernel puts a fake kernel and initrd of version v into /boot; their
// contents name the version so a read-back shows which one is there.
func (f *fixture) kernel(t testing.TB, v string, size int) {
	t.Helper()
	body := strings.Repeat("kernel "+v+" ", size/(8+len(v))+1)[:size]
	write(t, f.root+"/boot/vmlinuz-"+v, body)
	write(t, f.root+"/boot/initrd.img-"+v, "initrd "+v+"\n"+body[:size/2])
}

// fsck checks the FAT of the partition at offset in img with fsck.fat -n.
func fsck(t testing.TB, img string, p Partition) {
	t.Helper()
	// fsck.fat has no offset option: check a copy of the partition.
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	cp := filepath.Join(t.TempDir(), "part.img")
	dst, err := os.Create(cp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, p.Start, p.Size)); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	out, err := exec.Command("fsck.fat", "-n", cp).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat -n on %s: %v\n%s", p.Name, err, out)
	}
}

func (f *fixture) part(t testing.TB, name string) Partition {
	t.Helper()
	p, err := f.tool(t).FindPartition(filepath.Join(f.dev, name))
	if err != nil {
		t.Fatalf("FindPartition(%s): %v", name, err)
	}
	return p
}
