// Command rootbench measures a diskless client's sequential read of its
// root from berth's NBD server (internal/netboot/diskless: shared base
// plus the client's copy-on-write layer) beside nfs-ganesha (NFSv4.1, VFS
// FSAL) serving the same image file, with the same client: one QEMU (TCG)
// guest running Debian's kernel, whose own nbd and nfsv4 drivers read the
// image once from each server in every round.
//
// The guest's initramfs (diskless.BuildInitramfs with a benchmark /init)
// connects /dev/nbd0 to berth with nbd-client, or mounts ganesha's export,
// drops its page cache, and times `dd bs=1M` of the whole image with
// /proc/uptime: once with O_DIRECT (iflag=direct: every byte crosses the
// network, no readahead) and once buffered (what a root file system read
// does: the page cache and the kernel's readahead). Rounds alternate the
// order of the servers.
//
// It is run by `make bench-netboot-root` inside a fresh network namespace
// (unshare -n): the guest's tap, the bridge and both servers live there.
package main

import (
	"context"
	"crypto/rand"
	"flag"
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
	"time"

	"github.com/berthhq/berth/internal/netboot/diskless"
	"github.com/berthhq/berth/internal/vmtest"
)

const (
	bridge   = "rbbr0"
	tap      = "rbtap0"
	hostIP   = "10.79.0.1"
	guestIP  = "10.79.0.2"
	guestMAC = "52:54:00:7b:00:01"
	nbdPort  = "10809"
)

const ganeshaConf = `NFS_CORE_PARAM {
	Protocols = 4;
	Enable_NLM = false;
	Enable_RQUOTA = false;
}
NFSV4 { Graceless = true; }
EXPORT {
	Export_Id = 1;
	Path = %s;
	Pseudo = /export;
	Access_Type = RO;
	Squash = No_Root_Squash;
	Protocols = 4;
	Transports = TCP;
	SecType = sys;
	FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
`

// guestInit is the benchmark guest's /init. Each run prints
// "RB-RESULT NAME START END DDLINE" (uptime seconds).
const guestInit = `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod /lib/modules/$m 2>/dev/null; done
ROUNDS=1 CONNS=1 RA=
for x in $(cat /proc/cmdline); do
	case "$x" in
	rb.rounds=*) ROUNDS=${x#rb.rounds=} ;;
	rb.conns=*) CONNS=${x#rb.conns=} ;;
	rb.ra=*) RA=${x#rb.ra=} ;;
	esac
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done
ip link set lo up
ip link set eth0 up
ip addr add ` + guestIP + `/24 dev eth0
MAC=$(cat /sys/class/net/eth0/address)
mkdir -p /mnt
now() { cut -d' ' -f1 /proc/uptime; }
run() {
	sync
	echo 3 > /proc/sys/vm/drop_caches
	t0=$(now)
	dd if="$2" of=/dev/null bs=1M $3 2>/tmp/dd || echo "RB-FAIL $1 dd: $(cat /tmp/dd)"
	t1=$(now)
	echo "RB-RESULT $1 $t0 $t1 $(tail -n 1 /tmp/dd)"
}
nbd() {
	nbd-client ` + hostIP + ` ` + nbdPort + ` /dev/nbd0 -N "$MAC" -C $CONNS -t 60 >/tmp/nbd 2>&1 || { echo "RB-FAIL nbd-client: $(cat /tmp/nbd)"; return; }
	[ "${RA:-0}" != 0 ] && echo $RA > /sys/block/nbd0/queue/read_ahead_kb
	echo "RB-INFO nbd read_ahead_kb=$(cat /sys/block/nbd0/queue/read_ahead_kb) max_sectors_kb=$(cat /sys/block/nbd0/queue/max_sectors_kb)"
	run "nbd-$1" /dev/nbd0 "$2"
	nbd-client -d /dev/nbd0 >/dev/null 2>&1
}
nfs() {
	ok=
	for i in 1 2 3 4 5 6 7 8 9 10; do
		if mount -t nfs4 -o ro,vers=4.1,addr=` + hostIP + `,clientaddr=` + guestIP + ` ` + hostIP + `:/export /mnt 2>/tmp/mnt; then ok=1; break; fi
		sleep 1
	done
	[ -n "$ok" ] || { echo "RB-FAIL nfs mount: $(cat /tmp/mnt)"; return; }
	echo "RB-INFO nfs $(grep ' /mnt ' /proc/mounts)"
	run "nfs-$1" /mnt/root.img "$2"
	umount /mnt
}
r=1
while [ $r -le $ROUNDS ]; do
	if [ $((r % 2)) = 1 ]; then
		nbd direct iflag=direct; nfs direct iflag=direct; nbd buffered ""; nfs buffered ""
	else
		nfs buffered ""; nbd buffered ""; nfs direct iflag=direct; nbd direct iflag=direct
	fi
	r=$((r+1))
done
echo RB-DONE
poweroff -f
`

func main() {
	size := flag.Int("size", 256, "image size in MiB")
	rounds := flag.Int("rounds", 3, "rounds (the two servers alternate)")
	conns := flag.Int("conns", 1, "NBD connections of the guest's nbd-client (-C)")
	ra := flag.Int("ra", 0, "readahead of the guest's /dev/nbd0 in KiB (0: the kernel's default)")
	flag.Parse()
	if err := run(*size, *rounds, *conns, *ra); err != nil {
		fmt.Fprintln(os.Stderr, "rootbench:", err)
		os.Exit(1)
	}
}

func sh(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func run(sizeMiB, rounds, conns, ra int) error {
	for _, tool := range []string{"ganesha.nfsd", "qemu-system-x86_64", "busybox", "cpio", "/usr/sbin/nbd-client", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: make deps installs nfs-ganesha, nfs-ganesha-vfs, qemu-system-x86, busybox-static, cpio, nbd-client", tool)
		}
	}
	dir, err := os.MkdirTemp("", "rootbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The guest: Debian's kernel with its nbd and nfsv4 modules.
	k, mods, err := vmtest.DebianKernelWith("nbd", "nfsv4")
	if err != nil {
		return err
	}
	initrd := filepath.Join(dir, "initrd.img")
	if err := diskless.BuildInitramfs(diskless.InitramfsConfig{Busybox: "/bin/busybox", NBDClient: "/usr/sbin/nbd-client",
		ModulesDir: k.Modules, Modules: mods, Init: guestInit}, initrd); err != nil {
		return err
	}

	// The image both servers serve.
	export := filepath.Join(dir, "export")
	if err := os.MkdirAll(export, 0o755); err != nil {
		return err
	}
	img := filepath.Join(export, "root.img")
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, int64(sizeMiB)<<20); err != nil {
		return err
	}
	f.Close()

	// The network: a bridge with the servers' address and the guest's tap.
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"link", "add", bridge, "type", "bridge"},
		{"addr", "add", hostIP + "/24", "dev", bridge}, {"link", "set", bridge, "up"},
		{"tuntap", "add", "dev", tap, "mode", "tap"}, {"link", "set", tap, "master", bridge, "up"}} {
		if err := sh("ip", args...); err != nil {
			return err
		}
	}
	defer exec.Command("ip", "link", "del", tap).Run()
	defer exec.Command("ip", "link", "del", bridge).Run()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := diskless.New(diskless.Config{ClientsDir: filepath.Join(dir, "clients"),
		Image: func(net.HardwareAddr) (string, bool) { return img, true }, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, nbdPort))
	if err != nil {
		return err
	}
	go srv.Serve(ctx, ln)

	conf := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, ganeshaConf, export), 0o644); err != nil {
		return err
	}
	g := exec.Command("ganesha.nfsd", "-F", "-L", filepath.Join(dir, "ganesha.log"), "-f", conf, "-p", filepath.Join(dir, "ganesha.pid"))
	if err := g.Start(); err != nil {
		return err
	}
	defer func() { _ = g.Process.Kill(); _ = g.Wait() }()
	if err := waitTCP(net.JoinHostPort(hostIP, "2049"), time.Minute); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "ganesha.log"))
		return fmt.Errorf("nfs-ganesha does not listen: %v\n%s", err, tail(string(b)))
	}

	console := filepath.Join(dir, "console")
	q := exec.Command("qemu-system-x86_64", "-machine", "accel=tcg", "-m", "768", "-smp", "1",
		"-display", "none", "-monitor", "none", "-serial", "file:"+console, "-no-reboot",
		"-kernel", k.Vmlinuz, "-initrd", initrd,
		"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 rb.rounds=%d rb.conns=%d rb.ra=%d", rounds, conns, ra),
		"-nic", "tap,ifname="+tap+",script=no,downscript=no,model=virtio-net-pci,mac="+guestMAC)
	qout, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		return err
	}
	defer qout.Close()
	q.Stdout, q.Stderr = qout, qout
	if err := q.Start(); err != nil {
		return err
	}
	defer func() { _ = q.Process.Kill(); _ = q.Wait() }()
	out, err := vmtest.WaitFor(console, 30*time.Minute, []string{"RB-FAIL", "Kernel panic"}, "RB-DONE")
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "ganesha.log"))
		return fmt.Errorf("guest: %v\nconsole:\n%s\nganesha log:\n%s", err, tail(out), tail(string(b)))
	}

	results := map[string][]float64{}
	var info []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "RB-INFO "); ok && !slices.Contains(info, v) {
			info = append(info, v)
		}
		f := strings.Fields(l)
		if len(f) < 4 || f[0] != "RB-RESULT" {
			continue
		}
		t0, err0 := strconv.ParseFloat(f[2], 64)
		t1, err1 := strconv.ParseFloat(f[3], 64)
		if err0 != nil || err1 != nil || t1 <= t0 {
			return fmt.Errorf("bad result line %q", l)
		}
		results[f[1]] = append(results[f[1]], float64(int64(sizeMiB)<<20)/(t1-t0)/1e6)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("Sequential read of a %d MiB image by one QEMU TCG guest (Debian's kernel %s, nbd-client -C %d, NFSv4.1),\n",
		sizeMiB, filepath.Base(k.Modules), conns)
	fmt.Printf("%d rounds (alternating order), timed in the guest, MB/s = 10^6 bytes/s, median; load average %s\n",
		rounds, strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Println("| read | berth NBD | nfs-ganesha NFSv4.1 | berth / ganesha |")
	fmt.Println("|---|---:|---:|---:|")
	for _, mode := range []string{"direct", "buffered"} {
		b, n := median(results["nbd-"+mode]), median(results["nfs-"+mode])
		label := map[string]string{"direct": "O_DIRECT, dd bs=1M", "buffered": "buffered (page cache, readahead), dd bs=1M"}[mode]
		fmt.Printf("| %s | %.1f | %.1f | **%.2f×** |\n", label, b, n, b/n)
	}
	fmt.Println()
	for _, l := range info {
		fmt.Println("guest:", l)
	}
	st := srv.Stats()
	fmt.Printf("berth counters: %d exports, %d bytes read, %d errors.\n", st.Exports, st.BytesRead, st.Errors)
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func waitTCP(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}
