// Command vmbench measures berth's three kinds of guests side by side in
// one run, all from the same image in berth's image store (a busybox root
// with Debian's kernel, imported with berth's image import and turned
// into an ext4 root image and a bootable qcow2 disk by berth's image disk
// code): boot to a console marker as a UML guest (a COW file over the ext4
// image), a QEMU VM (TCG without /dev/kvm; a qcow2 overlay on the disk,
// SeaBIOS and extlinux) and a system container (overlayfs on the image's
// root), the memory each idle guest costs the host (PSS of all its host
// processes), and a fork/exec loop inside UML against the same loop on the
// host. It needs root and the packages of deps/vm.debs and deps/ct.debs;
// `make bench-vm` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/guest/container"
	"github.com/berthhq/berth/internal/guest/container/cttest"
	"github.com/berthhq/berth/internal/guest/qemu"
	"github.com/berthhq/berth/internal/guest/uml"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/vmtest"
)

type plog struct{}

func (plog) Printf(string, ...any) {}

func main() {
	if len(os.Args) > 1 && os.Args[1] == uml.RelayCommand {
		os.Exit(uml.RelayMain(os.Args[2:], os.Stderr))
	}
	cttest.Helper()
	rounds := flag.Int("rounds", 2, "boots per guest kind")
	loops := flag.Int("forks", 100, "fork/exec iterations of the syscall-heavy loop")
	flag.Parse()
	if err := run(*rounds, *loops); err != nil {
		fmt.Fprintln(os.Stderr, "vmbench:", err)
		os.Exit(1)
	}
}

// sample is one boot: time to the marker and the idle guest's PSS.
type sample struct {
	boot time.Duration
	pss  int64
}

func run(rounds, loops int) error {
	dir, err := os.MkdirTemp("", "berth-vmbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer vmtest.KillUnder(dir)
	os.Chmod(dir, 0o755)
	ctx := context.Background()
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	imgs, err := image.Open(ctx, st, filepath.Join(dir, "images"), nil)
	if err != nil {
		return err
	}
	t0 := time.Now()
	img, err := vmtest.Image(ctx, imgs, "bench", dir, true, "quiet", "ext4", "qcow2")
	if err != nil {
		return err
	}
	fmt.Printf("image %s: %d files, %.1f MiB root; ext4 and bootable qcow2 disk made by berth in %.1f s\n",
		img.Name, img.Files, float64(img.Size)/(1<<20), time.Since(t0).Seconds())
	exe, _ := os.Executable()
	ud := uml.New(filepath.Join(dir, "uml"), []string{exe, uml.RelayCommand}, nil)
	ud.SetImages(imgs)
	qd := qemu.New(filepath.Join(dir, "vms"), nil)
	qd.SetImages(imgs)
	cd, err := container.New(container.Options{DataDir: dir, Store: st, Images: imgs, Self: exe})
	if err != nil {
		return err
	}
	defer cd.Close()

	var umlS, vmS, ctS []sample
	var umlLoop float64
	for r := range rounds {
		ug := api.Guest{ID: 5100 + r, Kind: api.GuestUML, Config: map[string]string{"memory": "128", "disk0": "image=bench"}}
		if r == rounds-1 {
			ug.Config["append"] = fmt.Sprintf("berth.bench=%d", loops)
		}
		var out string
		s, err := measure(ctx, ud, ug, 3*time.Minute, func() string { return read(ud.ConsoleLog(ug.ID)) }, umlPIDs, &out)
		if err != nil {
			return fmt.Errorf("UML guest: %w", err)
		}
		umlS = append(umlS, s)
		if r == rounds-1 {
			if umlLoop, err = benchSeconds(out); err != nil {
				return err
			}
		}
		vg := api.Guest{ID: 5200 + r, Kind: api.GuestVM, Config: map[string]string{"memory": "128", "disk0": "image=bench"}}
		if s, err = measure(ctx, qd, vg, 5*time.Minute, func() string { return read(qd.ConsoleLog(vg.ID)) }, onePID, nil); err != nil {
			return fmt.Errorf("VM: %w", err)
		}
		vmS = append(vmS, s)
		cg := api.Guest{ID: 5300 + r, Kind: api.GuestContainer, Config: map[string]string{"image": "bench"}}
		console := func() string { b, _ := cd.ConsoleLog(cg.ID, 1<<16); return string(b) }
		if s, err = measure(ctx, cd, cg, time.Minute, console, nsPIDs, nil); err != nil {
			return fmt.Errorf("container: %w", err)
		}
		ctS = append(ctS, s)
	}
	hostLoop, err := hostLoop(loops)
	if err != nil {
		return err
	}
	mu, mv, mc := time.Duration(median(umlS, bootOf)), time.Duration(median(vmS, bootOf)), time.Duration(median(ctS, bootOf))
	fmt.Printf("boot to marker (median of %d, the same image, 128 MiB for UML and VM):\n", rounds)
	fmt.Printf("  container        %6.2f s\n", mc.Seconds())
	fmt.Printf("  UML guest        %6.2f s   (%.1fx the container)\n", mu.Seconds(), mu.Seconds()/mc.Seconds())
	fmt.Printf("  QEMU VM (%s)    %6.2f s   (%.1fx the container, %.1fx UML)\n", accel(qd), mv.Seconds(), mv.Seconds()/mc.Seconds(), mv.Seconds()/mu.Seconds())
	pu, pv, pc := median(umlS, pssOf), median(vmS, pssOf), median(ctS, pssOf)
	fmt.Printf("host memory per idle guest (PSS of all its host processes, 5 s after the marker):\n")
	fmt.Printf("  container        %6.1f MiB\n", float64(pc)/(1<<20))
	fmt.Printf("  UML guest        %6.1f MiB   (%.0fx the container)\n", float64(pu)/(1<<20), float64(pu)/float64(pc))
	fmt.Printf("  QEMU VM          %6.1f MiB   (%.0fx the container, %.1fx UML)\n", float64(pv)/(1<<20), float64(pv)/float64(pc), float64(pv)/float64(pu))
	fmt.Printf("fork/exec loop, %d x /bin/true from busybox sh:\n", loops)
	fmt.Printf("  host             %6.2f s\n", hostLoop)
	fmt.Printf("  inside UML       %6.2f s   (%.1fx the host: %+.0f%%)\n", umlLoop, umlLoop/hostLoop, (umlLoop/hostLoop-1)*100)
	return nil
}

func read(p string) string { b, _ := os.ReadFile(p); return string(b) }

func accel(d *qemu.Driver) string {
	if f, err := os.OpenFile(d.KVM, os.O_RDWR, 0); err == nil {
		f.Close()
		return "KVM"
	}
	return "TCG"
}

// measure creates and starts a guest, times its boot to the marker on its
// console, waits until its boot script is done, lets it idle 5 s, sums
// the PSS of its host processes (pids of its main process), and shuts it
// down. out receives the console text.
func measure(ctx context.Context, d guest.Driver, g api.Guest, limit time.Duration, console func() string, pids func(int) []int, out *string) (sample, error) {
	if err := d.Create(ctx, g, plog{}); err != nil {
		return sample{}, err
	}
	defer d.Destroy(ctx, g, plog{})
	defer d.Stop(ctx, g, plog{})
	t0 := time.Now()
	if err := d.Start(ctx, g, plog{}); err != nil {
		return sample{}, err
	}
	if _, err := waitFor(console, limit, vmtest.BootMarker); err != nil {
		return sample{}, err
	}
	boot := time.Since(t0)
	text, err := waitFor(console, 10*time.Minute, "BERTH-READY")
	if err != nil {
		return sample{}, err
	}
	if out != nil {
		*out = text
	}
	time.Sleep(5 * time.Second)
	st, err := d.Status(ctx, g)
	if err != nil {
		return sample{}, err
	}
	var pss int64
	for _, p := range pids(st.PID) {
		pss += processPSS(p)
	}
	return sample{boot: boot, pss: pss}, d.Shutdown(ctx, g, time.Minute, plog{})
}

// waitFor polls console until it holds mark or a kernel panic.
func waitFor(console func() string, limit time.Duration, mark string) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		s := console()
		switch {
		case strings.Contains(s, mark):
			return s, nil
		case strings.Contains(s, "Kernel panic"):
			return s, fmt.Errorf("kernel panic on the console:\n%s", s)
		case time.Now().After(deadline):
			return s, fmt.Errorf("no %q on the console after %s:\n%s", mark, limit, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// onePID is a QEMU VM: one process.
func onePID(pid int) []int { return []int{pid} }

// umlPIDs are the UML kernel and its helpers and guest processes: its
// process group.
func umlPIDs(pid int) []int {
	pgid, err := syscall.Getpgid(pid)
	if err != nil {
		return nil
	}
	return matching(func(p int) bool { g, err := syscall.Getpgid(p); return err == nil && g == pgid })
}

// nsPIDs are a container's processes: those in its init's PID namespace.
func nsPIDs(pid int) []int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return nil
	}
	return matching(func(p int) bool {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p))
		return err == nil && l == ns
	})
}

func matching(ok func(pid int) bool) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil && ok(p) {
			out = append(out, p)
		}
	}
	return out
}

var pssRE = regexp.MustCompile(`(?m)^Pss:\s+(\d+) kB`)

// processPSS is one process's proportional set size in bytes.
func processPSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	m := pssRE.FindSubmatch(b)
	if m == nil {
		return 0
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

var benchRE = regexp.MustCompile(`BERTH-BENCH ([0-9.]+) ([0-9.]+) END`)

func benchSeconds(console string) (float64, error) {
	m := benchRE.FindStringSubmatch(console)
	if m == nil {
		return 0, fmt.Errorf("no BERTH-BENCH line on the UML console")
	}
	t0, _ := strconv.ParseFloat(m[1], 64)
	t1, _ := strconv.ParseFloat(m[2], 64)
	return t1 - t0, nil
}

func hostLoop(n int) (float64, error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return 0, err
	}
	script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do %s true; i=$((i+1)); done", n, bb)
	t0 := time.Now()
	if out, err := exec.Command(bb, "sh", "-c", script).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("host loop: %v: %s", err, out)
	}
	return time.Since(t0).Seconds(), nil
}

func bootOf(s sample) int64 { return int64(s.boot) }
func pssOf(s sample) int64  { return s.pss }

// median of one measure over the samples.
func median(ss []sample, f func(sample) int64) int64 {
	v := make([]int64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v[len(v)/2]
}
