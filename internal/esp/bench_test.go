package esp

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkRefresh measures `berth boot refresh` of 3 kernels onto 2 ESPs
// beside a naive full copy with the same mtools (what proxmox-boot-tool
// does: every kernel, initrd and entry copied unconditionally on every
// run, then the ESP flushed as its umount does; proxmox-boot-tool itself
// needs mounted vfat, which this host lacks). "initial" starts from
// freshly initialised ESPs, "upgrade" from ESPs holding two of the three
// kernels, "noop" from ESPs already in sync. Each reports the bytes
// written to the ESPs.
// `make bench-boot` runs it and prints the ratios.
func BenchmarkRefresh(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	var parts []Partition
	for _, d := range []string{"loop0", "loop1"} {
		parts = append(parts, newESP(b, f, d, 300))
	}
	versions := []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"}
	for _, v := range versions {
		f.kernel(b, v, 8<<20)                                                // an 8 MiB vmlinuz
		write(b, f.root+"/boot/initrd.img-"+v, string(make([]byte, 32<<20))) // a 32 MiB initrd
	}
	base := b.TempDir()
	for _, p := range parts {
		copyFile(b, filepath.Join(base, p.Disk), p.DiskPath)
	}
	// "upgrade" starts from ESPs in sync with two of the kernels, as after
	// a kernel package upgrade brought the third.
	hidden := f.root + "/vmlinuz-hidden"
	if err := os.Rename(f.root+"/boot/vmlinuz-"+versions[0], hidden); err != nil {
		b.Fatal(err)
	}
	if err := f.tool(b).Refresh(ctx, ""); err != nil {
		b.Fatal(err)
	}
	os.Rename(hidden, f.root+"/boot/vmlinuz-"+versions[0])
	upgraded := b.TempDir()
	for _, p := range parts {
		copyFile(b, filepath.Join(upgraded, p.Disk), p.DiskPath)
	}
	start := func(mode string) {
		from := base
		if mode == "upgrade" {
			from = upgraded
		}
		for _, p := range parts {
			copyFile(b, p.DiskPath, filepath.Join(from, p.Disk))
		}
	}
	cmdline, _ := f.tool(b).Cmdline()
	fullCopy := func() int64 {
		var n int64
		tmp := filepath.Join(b.TempDir(), "entry")
		for _, p := range parts {
			img := fmt.Sprintf("%s@@%d", p.DiskPath, p.Start)
			mt := func(args ...string) error {
				c := exec.Command(args[0], append([]string{"-i", img}, args[1:]...)...)
				c.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
				out, err := c.CombinedOutput()
				if err != nil && args[0] != "mmd" { // mmd fails on an existing dir, like mkdir
					b.Fatalf("%v: %v\n%s", args, err, out)
				}
				return err
			}
			for _, v := range versions {
				mt("mmd", "::/EFI/proxmox/"+v)
				for _, src := range []string{f.root + "/boot/vmlinuz-" + v, f.root + "/boot/initrd.img-" + v} {
					st, _ := os.Stat(src)
					n += st.Size()
					mt("mcopy", "-o", src, "::/EFI/proxmox/"+v+"/")
				}
				e := EntryConf(f.tool(b).Title, v, cmdline)
				os.WriteFile(tmp, []byte(e), 0o644)
				n += int64(len(e))
				mt("mcopy", "-o", tmp, "::/loader/entries/proxmox-"+v+".conf")
			}
			// proxmox-boot-tool unmounts each ESP, which flushes it; berth
			// fsyncs. Both pay for durability.
			if fh, err := os.OpenFile(p.DiskPath, os.O_RDWR, 0); err == nil {
				fh.Sync()
				fh.Close()
			}
		}
		return n
	}
	for _, mode := range []string{"initial", "upgrade", "noop"} {
		b.Run("berth-"+mode, func(b *testing.B) {
			var bytes int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				start(mode)
				if mode == "noop" {
					if err := f.tool(b).Refresh(ctx, ""); err != nil {
						b.Fatal(err)
					}
				}
				tl := f.tool(b)
				b.StartTimer()
				if err := tl.Refresh(ctx, ""); err != nil {
					b.Fatal(err)
				}
				bytes += tl.Stats.Bytes
			}
			b.ReportMetric(float64(bytes)/float64(b.N), "B-written/op")
		})
		b.Run("fullcopy-"+mode, func(b *testing.B) {
			var bytes int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				start(mode)
				if mode == "noop" {
					fullCopy()
				}
				b.StartTimer()
				bytes += fullCopy()
			}
			b.ReportMetric(float64(bytes)/float64(b.N), "B-written/op")
		})
	}
}
