// Package vmtest provides what berth's VM and UML tests and benchmarks
// boot: a busybox root file system whose boot script prints markers,
// pings the host and records writes, Debian's amd64 kernel (downloaded
// with apt-get, never installed) and an initramfs that loads its virtio
// modules, put into a real image store with berth's own image import and
// disk code (Image), plus test bridges and process cleanup. It is test
// support only; the production image builder is internal/image.
package vmtest

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CacheDir holds downloaded kernels between test runs; BERTH_TEST_CACHE
// overrides it.
func CacheDir() string {
	if d := os.Getenv("BERTH_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/berth-test/vm"
}

// Markers the test root prints on its console.
const (
	BootMarker = "BERTH-BOOT-OK"
	NetOK      = "BERTH-NET-OK"
	NetFail    = "BERTH-NET-FAIL"
	Halting    = "BERTH-HALTING"
)

func run(dir string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// lock takes an exclusive flock on path, for test binaries running in
// parallel.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Kernel is an extracted Debian kernel package.
type Kernel struct {
	Vmlinuz string
	// Modules is lib/modules/VERSION.
	Modules string
}

// DebianKernel downloads linux-image-amd64's current kernel package with
// apt-get download (no install) and extracts it into the cache once.
func DebianKernel() (Kernel, error) {
	dir := filepath.Join(CacheDir(), "kernel")
	if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
		return Kernel{}, err
	}
	unlock, err := lock(filepath.Join(CacheDir(), ".lock"))
	if err != nil {
		return Kernel{}, err
	}
	defer unlock()
	if k, err := findKernel(dir); err == nil {
		return k, nil
	}
	dl := filepath.Join(CacheDir(), "download")
	os.RemoveAll(dl)
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return Kernel{}, err
	}
	defer os.RemoveAll(dl)
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return Kernel{}, fmt.Errorf("apt-cache depends linux-image-amd64: %w (run apt-get update)", err)
	}
	pkg := ""
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Depends: "); ok && strings.HasPrefix(v, "linux-image-") {
			pkg = v
			break
		}
	}
	if pkg == "" {
		return Kernel{}, errors.New("apt-cache: linux-image-amd64 names no kernel package")
	}
	if err := run(dl, "apt-get", "download", pkg); err != nil {
		return Kernel{}, err
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return Kernel{}, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := run(dl, "dpkg-deb", "-x", debs[0], tmp); err != nil {
		return Kernel{}, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return Kernel{}, err
	}
	return findKernel(dir)
}

// DebianKernelWith is DebianKernel plus the modules a guest loads: the
// paths of VMModules and extra with their dependencies, dependencies
// first (see ModuleDeps).
func DebianKernelWith(extra ...string) (Kernel, []string, error) {
	k, err := DebianKernel()
	if err != nil {
		return k, nil, err
	}
	mods, err := k.ModuleDeps(append(slices.Clone(VMModules), extra...)...)
	return k, mods, err
}

func findKernel(dir string) (Kernel, error) {
	vm, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	if len(vm) != 1 || len(mods) != 1 {
		return Kernel{}, fmt.Errorf("no kernel in %s", dir)
	}
	return Kernel{Vmlinuz: vm[0], Modules: mods[0]}, nil
}

// ModuleDeps returns the paths (relative to k.Modules) of the named
// modules with everything they depend on, dependencies first. It reads
// each module's .modinfo section, so it needs no depmod.
func (k Kernel) ModuleDeps(names ...string) ([]string, error) {
	index := map[string]string{}
	err := filepath.WalkDir(filepath.Join(k.Modules, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".ko") {
			n := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(p), ".ko"), "-", "_")
			rel, _ := filepath.Rel(k.Modules, p)
			index[n] = rel
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []string
	seen := map[string]bool{}
	var visit func(n string) error
	visit = func(n string) error {
		n = strings.ReplaceAll(n, "-", "_")
		if seen[n] {
			return nil
		}
		seen[n] = true
		rel, ok := index[n]
		if !ok {
			return fmt.Errorf("module %s not found under %s", n, k.Modules)
		}
		deps, err := moduleDepends(filepath.Join(k.Modules, rel))
		if err != nil {
			return err
		}
		for _, dep := range deps {
			if err := visit(dep); err != nil {
				return err
			}
		}
		order = append(order, rel)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s has no .modinfo", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// busyboxApplets are linked into the test root.
var busyboxApplets = []string{"sh", "mount", "umount", "ip", "ping", "echo", "cat", "ls", "sleep", "poweroff",
	"halt", "reboot", "sync", "acpid", "insmod", "switch_root", "mkdir", "hostname", "uname", "nc", "grep",
	"seq", "true", "rm", "cp", "dd", "sed", "mknod", "wc", "head", "tail", "md5sum", "date", "env", "ps", "kill", "cut"}

// rcScript runs at boot in the test root: it prints BootMarker, brings
// up eth0 from berth.ip=ADDR/LEN and pings berth.host=ADDR, and records
// berth.write=NAME as /marks/NAME before listing /marks.
const rcScript = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mount -o remount,rw /
echo "` + BootMarker + ` $(uname -r)"
IP= HOST= WRITE= BENCH=
for x in $(cat /proc/cmdline); do
	case "$x" in
	berth.ip=*) IP=${x#berth.ip=} ;;
	berth.host=*) HOST=${x#berth.host=} ;;
	berth.write=*) WRITE=${x#berth.write=} ;;
	berth.bench=*) BENCH=${x#berth.bench=} ;;
	esac
done
if [ -n "$WRITE" ]; then
	mkdir -p /marks
	echo "$WRITE" > /marks/$WRITE
	sync
	echo "BERTH-MARKS: $(ls /marks | tr '\n' ' ')END"
fi
if [ -n "$IP" ]; then
	ip link set lo up
	ip link set eth0 up
	ip addr add "$IP" dev eth0
	# Retry for up to 120 s of guest uptime: on a loaded host a starved
	# guest misses single ping timeouts, and the first ARP exchange waits
	# for the host side of the NIC to come up.
	ok=
	end=$(( $(cut -d. -f1 /proc/uptime) + 120 ))
	while [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ]; do
		if ping -c 1 -W 3 "$HOST" >/dev/null 2>&1; then ok=1; break; fi
		sleep 1
	done
	if [ -n "$ok" ]; then echo "` + NetOK + `"; else
		echo "` + NetFail + ` $HOST after 120 s:"; ip addr show eth0; ip neigh; fi
fi
# The ACPI power button: any event from it powers off (no acpid needed).
for e in /sys/class/input/event*; do
	if [ "$(cat $e/device/name 2>/dev/null)" = "Power Button" ]; then
		(dd if=/dev/input/${e##*/} bs=24 count=1 >/dev/null 2>&1 && poweroff) &
		echo BERTH-ACPID
	fi
done
if [ -n "$BENCH" ]; then
	t0=$(cut -d' ' -f1 /proc/uptime)
	i=0
	while [ $i -lt $BENCH ]; do /bin/true; i=$((i+1)); done
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "BERTH-BENCH $t0 $t1 END"
fi
echo BERTH-READY
`

// inittab runs the rc script and a shell on the console when the console
// is a terminal (VMs, UML guests); a container's init has no terminal, so
// there it idles instead of respawning a shell that exits at once.
const inittab = `::sysinit:/etc/rc
::respawn:/bin/sh -c '[ -t 0 ] && exec /bin/sh -l; exec /bin/busybox sleep 2147483647'
::ctrlaltdel:/bin/busybox poweroff
::shutdown:/bin/echo ` + Halting + `
::shutdown:/bin/umount -a -r
`

// BusyboxRoot writes a minimal root file system into dir: busybox-static
// with the applets the tests use, /sbin/init, /etc/inittab and the rc
// script described at rcScript.
func BusyboxRoot(dir string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("busybox-static is not installed: %w", err)
	}
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "lib/modules", "newroot", "marks"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	for _, a := range append(busyboxApplets, "tr") {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	if err := os.Symlink("../bin/busybox", filepath.Join(dir, "sbin", "init")); err != nil && !os.IsExist(err) {
		return err
	}
	files := map[string]string{"etc/rc": rcScript, "etc/inittab": inittab,
		"etc/hostname": "berth-test\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// Ext4 makes an ext4 image of sizeMiB from the tree at src with
// mkfs.ext4 -d.
func Ext4(src, image string, sizeMiB int) error {
	return run("", "mkfs.ext4", "-q", "-F", "-L", "berthroot", "-d", src, image, fmt.Sprintf("%dM", sizeMiB))
}

// initScript is the initramfs /init for the QEMU test: it loads the
// modules listed in /modules, mounts /dev/vda1 (the root partition of a
// disk made by berth image disk) or else /dev/vda (a bare file system
// image) and switches to it.
const initScript = `#!/bin/sh
/bin/mount -t proc proc /proc
/bin/mount -t devtmpfs dev /dev
for m in $(cat /modules); do /bin/insmod /$m; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.5; done
sleep 0.2
root=/dev/vda
[ -b /dev/vda1 ] && root=/dev/vda1
/bin/mount -t ext4 $root /newroot || { echo "initramfs: cannot mount $root"; exec /bin/sh; }
/bin/umount /proc
/bin/umount /dev
exec /bin/switch_root /newroot /sbin/init
`

// VMModules are the modules the QEMU test guest loads.
var VMModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "e1000", "crc32c_generic", "ext4", "button", "evdev"}

// Initramfs writes a newc cpio initramfs to out holding busybox, the
// modules (with their dependencies) and an /init that mounts /dev/vda as
// the root.
func Initramfs(k Kernel, out string) error {
	tmp, err := os.MkdirTemp("", "berth-initramfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := BusyboxRoot(tmp); err != nil {
		return err
	}
	mods, err := k.ModuleDeps(VMModules...)
	if err != nil {
		return err
	}
	for _, m := range mods {
		data, err := os.ReadFile(filepath.Join(k.Modules, m))
		if err != nil {
			return err
		}
		dst := filepath.Join(tmp, m)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "modules"), []byte(strings.Join(mods, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "init"), []byte(initScript), 0o755); err != nil {
		return err
	}
	var names []string
	filepath.WalkDir(tmp, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != tmp {
			rel, _ := filepath.Rel(tmp, p)
			names = append(names, rel)
		}
		return nil
	})
	sort.Strings(names)
	cmd := exec.Command("cpio", "--quiet", "-o", "-H", "newc", "-O", out)
	cmd.Dir = tmp
	cmd.Stdin = strings.NewReader(strings.Join(names, "\n") + "\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cpio: %w: %s", err, b)
	}
	return nil
}

// Bridge creates a test bridge name with host address addr (CIDR) and
// returns a function that deletes it. Guests attached to it can reach only
// the host address: nothing is forwarded.
func Bridge(name, addr string) (func(), error) {
	del := func() { exec.Command("ip", "link", "del", name).Run() }
	del()
	// No STP and no forward delay: a port forwards as soon as its tap
	// comes up, so a guest's first ping is not lost to a listening port.
	for _, args := range [][]string{{"link", "add", "name", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"addr", "add", addr, "dev", name}, {"link", "set", name, "up"}} {
		if err := run("", "ip", args...); err != nil {
			del()
			return nil, err
		}
	}
	return del, nil
}

// WaitFor polls file until it contains every one of marks, or any of
// fail, and returns its content. It gives up after limit.
func WaitFor(file string, limit time.Duration, fail []string, marks ...string) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		b, _ := os.ReadFile(file)
		s := string(b)
		all := true
		for _, m := range marks {
			if !strings.Contains(s, m) {
				all = false
			}
		}
		if all {
			return s, nil
		}
		for _, f := range fail {
			if strings.Contains(s, f) {
				return s, fmt.Errorf("%s shows %q", file, f)
			}
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("%s lacks %q after %s", file, marks, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Root reports whether root-only system tests are enabled, and why not.
func Root() (bool, string) {
	if os.Getenv("BERTH_TEST_ROOT") != "1" {
		return false, "set BERTH_TEST_ROOT=1 (make test does, as root) to boot real guests"
	}
	if os.Geteuid() != 0 {
		return false, "booting guests with bridges and taps needs root"
	}
	return true, ""
}

// KillUnder sends SIGKILL to every process whose command line mentions
// dir: the guests (QEMU, UML kernels, console relays) a failed test left
// running. dir must be a test's own temporary directory.
func KillUnder(dir string) {
	if len(dir) < 8 {
		return
	}
	for _, pid := range PIDsUnder(dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// PIDsUnder returns the processes (other than this one) whose command
// line mentions dir.
func PIDsUnder(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// GuestID returns guest ID n (0-9) of this test process: unique per
// process, so that tests running at once (in other packages or other
// checkouts) never share the taps, named after guest IDs, of each other's
// guests.
func GuestID(n int) int { return 100000 + (os.Getpid()%89999)*10 + n%10 }

// Subnet returns the first three octets of test network n (0-9) of this
// test process, 10.16n.X: bridges of tests running at once, in other
// packages or other checkouts, get distinct subnets, so the host routes
// each guest's replies to its own bridge. X starts from the process ID;
// the process holds a lock file for 10.16n.X until it exits, and skips
// an X that another process holds or that an interface of the host
// already uses (a test binary without this lock, a leftover bridge).
func Subnet(n int) string {
	subnets.Lock()
	defer subnets.Unlock()
	if s, ok := subnets.byN[n]; ok {
		return s
	}
	a := 160 + n%10
	start := os.Getpid() % 250
	s := fmt.Sprintf("10.%d.%d", a, start+1)
	for i := range 250 {
		x := (start+i)%250 + 1
		cand := fmt.Sprintf("10.%d.%d", a, x)
		if hostUses(cand) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "berth-test-net-"+cand+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			break
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		subnets.held = append(subnets.held, f) // held until exit
		s = cand
		break
	}
	if subnets.byN == nil {
		subnets.byN = map[int]string{}
	}
	subnets.byN[n] = s
	return s
}

var subnets struct {
	sync.Mutex
	byN  map[int]string
	held []*os.File
}

// hostUses reports whether an address of this host lies in prefix.0/24.
func hostUses(prefix string) bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && strings.HasPrefix(ipn.IP.String(), prefix+".") {
			return true
		}
	}
	return false
}
