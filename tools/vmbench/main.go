// Command vmbench measures berth's full-kernel guests side by side in one
// run: boot to a console marker of the same root file system as a UML
// guest and as a QEMU VM (TCG without /dev/kvm), the memory each idle
// guest costs the host (PSS of all its host processes), and a fork/exec
// loop inside UML against the same loop on the host. It needs root and the
// packages of deps/vm.debs; `make bench-vm` runs it.
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
	"syscall"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest/qemu"
	"github.com/berthhq/berth/internal/guest/uml"
	"github.com/berthhq/berth/internal/vmtest"
)

type plog struct{}

func (plog) Printf(string, ...any) {}

func main() {
	if len(os.Args) > 1 && os.Args[1] == uml.RelayCommand {
		os.Exit(uml.RelayMain(os.Args[2:], os.Stderr))
	}
	rounds := flag.Int("rounds", 2, "boots per guest kind")
	loops := flag.Int("forks", 100, "fork/exec iterations of the syscall-heavy loop")
	flag.Parse()
	if err := run(*rounds, *loops); err != nil {
		fmt.Fprintln(os.Stderr, "vmbench:", err)
		os.Exit(1)
	}
}

func run(rounds, loops int) error {
	dir, err := os.MkdirTemp("", "berth-vmbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	im, err := vmtest.Build(dir, true)
	if err != nil {
		return err
	}
	os.Chmod(im.Root, 0o444)
	vmRoot := filepath.Join(dir, "vmroot.ext4")
	if err := exec.Command("cp", im.Root, vmRoot).Run(); err != nil {
		return err
	}
	exe, _ := os.Executable()
	ud := uml.New(filepath.Join(dir, "uml"), []string{exe, uml.RelayCommand}, nil)
	qd := qemu.New(filepath.Join(dir, "vms"), nil)
	ctx := context.Background()

	var umlBoot, vmBoot []time.Duration
	var umlPSS, vmPSS []int64
	var umlLoop float64
	for r := range rounds {
		id := 5100 + r
		ug := api.Guest{ID: id, Kind: api.GuestUML, Config: map[string]string{"memory": "128", "disk0": im.Root + ",cow"}}
		if r == rounds-1 {
			ug.Config["append"] = fmt.Sprintf("berth.bench=%d", loops)
		}
		d, pss, out, err := bootUML(ctx, ud, ug)
		if err != nil {
			return err
		}
		umlBoot, umlPSS = append(umlBoot, d), append(umlPSS, pss)
		if r == rounds-1 {
			if umlLoop, err = benchSeconds(out); err != nil {
				return err
			}
		}
		vg := api.Guest{ID: 5200 + r, Kind: api.GuestVM, Config: map[string]string{"memory": "128", "disk0": "backing=" + vmRoot,
			"kernel": im.Kernel.Vmlinuz, "initrd": im.Initrd, "append": "console=ttyS0 quiet"}}
		d, pss, err = bootVM(ctx, qd, vg)
		if err != nil {
			return err
		}
		vmBoot, vmPSS = append(vmBoot, d), append(vmPSS, pss)
	}
	hostLoop, err := hostLoop(loops)
	if err != nil {
		return err
	}
	mu, mv := median(umlBoot), median(vmBoot)
	fmt.Printf("boot to marker (median of %d, same busybox ext4 root, 128 MiB guests):\n", rounds)
	fmt.Printf("  UML guest        %6.2f s\n", mu.Seconds())
	fmt.Printf("  QEMU VM (%s)    %6.2f s   (%.1fx the UML boot)\n", accel(qd), mv.Seconds(), mv.Seconds()/mu.Seconds())
	fmt.Printf("  container        not measured: this run boots only full-kernel guests\n")
	pu, pv := medianInt(umlPSS), medianInt(vmPSS)
	fmt.Printf("host memory per idle guest (PSS of all its host processes, 5 s after the marker):\n")
	fmt.Printf("  UML guest        %6.1f MiB\n", float64(pu)/(1<<20))
	fmt.Printf("  QEMU VM          %6.1f MiB   (%.1fx UML)\n", float64(pv)/(1<<20), float64(pv)/float64(pu))
	fmt.Printf("fork/exec loop, %d x /bin/true from busybox sh:\n", loops)
	fmt.Printf("  host             %6.2f s\n", hostLoop)
	fmt.Printf("  inside UML       %6.2f s   (%.1fx the host: %+.0f%%)\n", umlLoop, umlLoop/hostLoop, (umlLoop/hostLoop-1)*100)
	return nil
}

func accel(d *qemu.Driver) string {
	if f, err := os.OpenFile(d.KVM, os.O_RDWR, 0); err == nil {
		f.Close()
		return "KVM"
	}
	return "TCG"
}

func bootUML(ctx context.Context, d *uml.Driver, g api.Guest) (time.Duration, int64, string, error) {
	if err := d.Create(ctx, g, plog{}); err != nil {
		return 0, 0, "", err
	}
	defer d.Destroy(ctx, g, plog{})
	defer d.Stop(ctx, g, plog{})
	t0 := time.Now()
	if err := d.Start(ctx, g, plog{}); err != nil {
		return 0, 0, "", err
	}
	if _, err := vmtest.WaitFor(d.ConsoleLog(g.ID), 3*time.Minute, []string{"Kernel panic"}, vmtest.BootMarker); err != nil {
		return 0, 0, "", err
	}
	boot := time.Since(t0)
	out, err := vmtest.WaitFor(d.ConsoleLog(g.ID), 10*time.Minute, []string{"Kernel panic"}, "BERTH-READY")
	if err != nil {
		return 0, 0, "", err
	}
	time.Sleep(5 * time.Second)
	st, err := d.Status(ctx, g)
	if err != nil {
		return 0, 0, "", err
	}
	pss := groupPSS(st.PID)
	return boot, pss, out, d.Shutdown(ctx, g, time.Minute, plog{})
}

func bootVM(ctx context.Context, d *qemu.Driver, g api.Guest) (time.Duration, int64, error) {
	if err := d.Create(ctx, g, plog{}); err != nil {
		return 0, 0, err
	}
	defer d.Destroy(ctx, g, plog{})
	defer d.Stop(ctx, g, plog{})
	t0 := time.Now()
	if err := d.Start(ctx, g, plog{}); err != nil {
		return 0, 0, err
	}
	if _, err := vmtest.WaitFor(d.ConsoleLog(g.ID), 5*time.Minute, []string{"Kernel panic"}, vmtest.BootMarker); err != nil {
		return 0, 0, err
	}
	boot := time.Since(t0)
	vmtest.WaitFor(d.ConsoleLog(g.ID), time.Minute, nil, "BERTH-READY")
	time.Sleep(5 * time.Second)
	st, err := d.Status(ctx, g)
	if err != nil {
		return 0, 0, err
	}
	pss := groupPSS(st.PID)
	return boot, pss, d.Shutdown(ctx, g, time.Minute, plog{})
}

var pssRE = regexp.MustCompile(`(?m)^Pss:\s+(\d+) kB`)

// groupPSS sums the proportional set size of pid and every process in its
// process group (UML runs guest processes as host processes of its own).
func groupPSS(pid int) int64 {
	pgid, err := syscall.Getpgid(pid)
	if err != nil {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	var total int64
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(p); err != nil || g != pgid {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if err != nil {
			continue
		}
		if m := pssRE.FindSubmatch(b); m != nil {
			kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
			total += kb << 10
		}
	}
	return total
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

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func medianInt(xs []int64) int64 {
	s := append([]int64(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
