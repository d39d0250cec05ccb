package diskless

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// KernelArgs is the kernel command line a diskless client needs for the
// initramfs from BuildInitramfs to mount its root from the NBD server at
// addr (host:port as the client reaches it). The client gets its address
// by DHCP on its first network interface.
func KernelArgs(addr string) string {
	return "berth.nbd=" + addr + " rw"
}

// RootPath is the DHCP/BOOTP root path (option 17) naming the NBD server
// at addr (host:port), in dracut's form nbd:HOST:PORT. The initramfs
// uses it when the command line has no berth.nbd=, so a client that is
// configured by BOOTP alone (ip=:::::eth0:bootp) finds its root too.
func RootPath(addr string) string {
	return "nbd:" + addr
}

// InitramfsConfig says what goes into a diskless client's initramfs.
type InitramfsConfig struct {
	// Busybox is a static busybox (Debian's busybox-static:
	// /bin/busybox).
	Busybox string
	// NBDClient is Debian's nbd-client (/usr/sbin/nbd-client); the shared
	// libraries it needs are copied along (found with ldd).
	NBDClient string
	// ModulesDir is the kernel's lib/modules/VERSION directory, and
	// Modules the .ko files (relative to it) to load, dependencies first:
	// the network driver, nbd, ext4.
	ModulesDir string
	Modules    []string
	// IPConfig is klibc's ipconfig (Debian's klibc-utils:
	// /usr/lib/klibc/bin/ipconfig), optional. With it the initramfs
	// honours the kernel's ip= syntax (ip=:::::eth0:bootp for a
	// BOOTP-only client, ip=:::::eth0:dhcp, ...) the way Debian's
	// initramfs-tools does, instead of busybox udhcpc (DHCP only).
	IPConfig string
	// Init, if set, replaces the /init script (tools/rootbench reads the
	// root over NBD and NFS with the same kernel and files).
	Init string
}

// initScript is the client's /init: modules, network (DHCP by udhcpc
// unless berth.ip=ADDR/LEN is given, or klibc ipconfig for ip=SPEC),
// nbd-client to the export named by the interface's MAC (server from
// berth.nbd=, else from an nbd:HOST:PORT root path), then the root from
// /dev/nbd0.
const initScript = `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod /lib/modules/$m 2>/dev/null; done
fail() { echo "berth-initramfs: $*"; echo "berth-initramfs: dropping to a shell"; exec sh; }
NBD= IP= GW= IPSPEC=
for x in $(cat /proc/cmdline); do
	case "$x" in
	berth.nbd=*) NBD=${x#berth.nbd=} ;;
	berth.ip=*) IP=${x#berth.ip=} ;;
	berth.gw=*) GW=${x#berth.gw=} ;;
	ip=*) IPSPEC=$x ;;
	esac
done
IF=
for i in 1 2 3 4 5 6 7 8 9 10; do
	for n in /sys/class/net/*; do
		n=${n##*/}
		[ "$n" = lo ] && continue
		IF=$n; break
	done
	[ -n "$IF" ] && break
	sleep 0.5
done
[ -n "$IF" ] || fail "no network interface"
ip link set lo up
ip link set "$IF" up
if [ -n "$IP" ]; then
	ip addr add "$IP" dev "$IF"
	[ -n "$GW" ] && ip route add default via "$GW"
elif [ -n "$IPSPEC" ] && [ -x /sbin/ipconfig ]; then
	# klibc's ipconfig: BOOTP, DHCP or static, as the kernel's ip=. It
	# configures the interface and writes what it got to /run/net-IF.conf.
	ipconfig -t 30 "$IPSPEC" || fail "ipconfig $IPSPEC: no answer"
	for c in /run/net-*.conf; do [ -f "$c" ] && . "$c" && IF=$DEVICE; done
	echo "berth-initramfs: $PROTO $IF address $IPV4ADDR/$IPV4NETMASK server $ROOTSERVER bootfile ${filename:--} rootpath ${ROOTPATH:--}"
	case "$ROOTPATH" in nbd:*) [ -n "$NBD" ] || NBD=${ROOTPATH#nbd:} ;; esac
else
	udhcpc -i "$IF" -q -f -n -t 10 -s /etc/udhcpc.script >/dev/null 2>&1 || fail "no DHCP answer on $IF"
fi
[ -n "$NBD" ] || fail "no berth.nbd=HOST:PORT on the kernel command line and no nbd:HOST:PORT root path"
MAC=$(cat /sys/class/net/$IF/address)
echo "berth-initramfs: $IF $MAC root from nbd $NBD"
nbd-client "${NBD%:*}" "${NBD##*:}" /dev/nbd0 -N "$MAC" -t 60 || fail "nbd-client failed"
mount -t ext4 -o rw /dev/nbd0 /newroot || fail "cannot mount the root from /dev/nbd0"
umount /sys
umount /proc
umount /dev 2>/dev/null
exec switch_root /newroot /sbin/init
`

const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	[ -n "$router" ] && ip route add default via "${router%% *}"
	;;
esac
exit 0
`

var initApplets = []string{"sh", "mount", "umount", "insmod", "ip", "udhcpc", "cat", "sleep", "switch_root", "ls", "echo", "mkdir",
	"dd", "cut", "tail", "grep", "sync", "poweroff"}

// BuildInitramfs writes a newc cpio initramfs to out for diskless clients
// (see KernelArgs). It uses cpio(1) to pack.
func BuildInitramfs(cfg InitramfsConfig, out string) error {
	tmp, err := os.MkdirTemp("", "berth-diskless-initramfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "newroot", "lib/modules", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(cfg.Busybox, filepath.Join(tmp, "bin/busybox"), 0o755); err != nil {
		return fmt.Errorf("busybox: %w (install busybox-static)", err)
	}
	for _, a := range initApplets {
		if err := os.Symlink("busybox", filepath.Join(tmp, "bin", a)); err != nil {
			return err
		}
	}
	if err := copyFile(cfg.NBDClient, filepath.Join(tmp, "sbin/nbd-client"), 0o755); err != nil {
		return fmt.Errorf("nbd-client: %w (install nbd-client)", err)
	}
	bins := []string{cfg.NBDClient}
	if cfg.IPConfig != "" {
		if err := copyFile(cfg.IPConfig, filepath.Join(tmp, "sbin/ipconfig"), 0o755); err != nil {
			return fmt.Errorf("ipconfig: %w (install klibc-utils)", err)
		}
		bins = append(bins, cfg.IPConfig)
	}
	for _, bin := range bins {
		libs, err := sharedLibs(bin)
		if err != nil {
			return err
		}
		for _, l := range libs {
			if err := copyFile(l, filepath.Join(tmp, l), 0o755); err != nil {
				return err
			}
		}
	}
	for _, m := range cfg.Modules {
		if err := copyFile(filepath.Join(cfg.ModulesDir, m), filepath.Join(tmp, "lib/modules", m), 0o644); err != nil {
			return fmt.Errorf("module: %w", err)
		}
	}
	init := initScript
	if cfg.Init != "" {
		init = cfg.Init
	}
	files := map[string]string{
		"init":              init,
		"etc/udhcpc.script": udhcpcScript,
		"modules":           strings.Join(cfg.Modules, "\n") + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte(content), 0o755); err != nil {
			return err
		}
	}
	var names []string
	err = filepath.WalkDir(tmp, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != tmp {
			rel, _ := filepath.Rel(tmp, p)
			names = append(names, rel)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	part := out + ".tmp"
	cmd := exec.Command("cpio", "--quiet", "-o", "-H", "newc", "-O", part)
	cmd.Dir = tmp
	cmd.Stdin = strings.NewReader(strings.Join(names, "\n") + "\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(part)
		return fmt.Errorf("cpio: %w: %s", err, b)
	}
	return os.Rename(part, out)
}

var lddLine = regexp.MustCompile(`(?m)(/\S+) \(0x`)

// sharedLibs lists the shared libraries (and the loader) bin needs. A
// klibc program has only its interpreter (/lib/klibc-HASH.so), which ldd
// does not list: that comes from the ELF header.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return elfInterp(bin)
		}
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	for _, m := range lddLine.FindAllSubmatch(out, -1) {
		libs = append(libs, string(m[1]))
	}
	return libs, nil
}

// elfInterp returns bin's program interpreter (PT_INTERP), if any.
func elfInterp(bin string) ([]string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return nil, fmt.Errorf("reading %s's interpreter: %w", bin, err)
		}
		return []string{string(bytes.TrimRight(b, "\x00"))}, nil
	}
	return nil, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}
