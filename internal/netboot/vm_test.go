package netboot_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/vmtest"
)

// TestVMNetBoot creates VMs through berth with `berth vm create
// --net bridge=br0,macaddr=MAC --boot order=net` (SeaBIOS and UEFI) in the
// rig's network namespace, where berth's own network boot service answers
// on br0 with a host entry for each MAC, and checks each PXE-boots from
// it: its tap sits in br0, its NIC's iPXE ROM gets an address and the
// host's iPXE script from berth, the kernel and the marker initramfs come
// over HTTP, and the marker shows on the VM's serial console. Then berth
// stops the VM and nothing of it is left.
func TestVMNetBoot(t *testing.T) {
	r := newMarkerRig(t)
	t.Cleanup(func() { vmtest.KillUnder(r.data) })
	const marker = "BERTH-VM-PXE-MARKER"
	// The marker stays up, so that berth is what stops the VM.
	initramfs(t, filepath.Join(r.root, "marker.cpio"), "/bin/busybox echo "+marker+"\nwhile :; do /bin/busybox sleep 60; done\n")
	r.berth("netboot", "enable", "--interface", "br0", "--range", "10.78.0.100-10.78.0.150")
	for _, tc := range []struct{ id, bios, mac string }{
		{"601", "seabios", "52:54:00:e2:e0:3a"},
		{"602", "ovmf", "52:54:00:e2:e0:3b"},
	} {
		t.Run(tc.bios, func(t *testing.T) {
			if tc.bios == "ovmf" {
				if _, err := os.Stat("/usr/share/OVMF/OVMF_CODE_4M.fd"); err != nil {
					t.Skip("skipping: Debian's ovmf is not installed (make deps installs deps/*.debs)")
				}
			}
			r.berth("netboot", "host", "add", tc.mac, "--name", "vm-"+tc.bios, "--kernel", "vmlinuz", "--initrd", "marker.cpio",
				"--cmdline", "console=ttyS0 quiet panic=-1")
			netBootVM(t, r, tc.id, tc.mac, tc.bios, marker)
		})
	}
}

func netBootVM(t *testing.T, r *rig, id, mac, bios, marker string) {
	r.berth("vm", "create", id, "--memory", "256", "--net", "bridge=br0,macaddr="+mac, "--boot", "order=net", "--bios", bios)
	start := time.Now()
	r.berth("vm", "start", id)
	link, err := exec.Command("ip", "-n", r.ns, "-o", "link", "show", "tap"+id+"i0").CombinedOutput()
	if err != nil || !strings.Contains(string(link), " master br0 ") {
		t.Errorf("the VM's tap is not in br0: %s, %v", link, err)
	}
	console := filepath.Join(r.data, "vms", id, "console.log")
	if out, err := vmtest.WaitFor(console, 5*time.Minute, []string{"Kernel panic"}, marker); err != nil {
		t.Fatalf("%v\nconsole:\n%s\ndaemon log:\n%s", err, tailStr(out, 4000), tailStr(r.log.String(), 4000))
	}
	t.Logf("VM (%s) PXE boot from berth to marker: %s", bios, time.Since(start).Round(100*time.Millisecond))
	if out := r.berth("vm", "status", id); !strings.Contains(out, "running") {
		t.Errorf("vm status:\n%s", out)
	}

	var st wire.NetbootStatus
	if err := json.Unmarshal([]byte(r.berth("netboot", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	d, h := st.Services["dhcp"], st.Services["http"]
	if d["acks"] < 1 || h["scripts"] < 1 || h["transfers"] < 2 {
		t.Errorf("counters: dhcp %v http %v (want an ack, the host's script, kernel and initramfs)", d, h)
	}
	fetched := false
	for _, l := range strings.Split(r.log.String(), "\n") {
		fetched = fetched || strings.Contains(l, "httpboot: boot script") && strings.Contains(l, " mac="+mac+" ")
	}
	if !fetched {
		t.Errorf("the VM did not fetch its iPXE script from berth; daemon log:\n%s", r.log.String())
	}
	// The bridge had no IPv6 link-local address before a VM's tap
	// brought it up; berth's router advertisements must start then, or
	// iPXE waits ~15 s for IPv6 autoconfiguration.
	if !strings.Contains(r.log.String(), "sending IPv6 router advertisements") {
		t.Errorf("no IPv6 router advertisements on br0; daemon log:\n%s", r.log.String())
	}
	if leases := r.berth("netboot", "lease", "list"); !strings.Contains(leases, mac) {
		t.Errorf("lease list lacks the VM's MAC %s:\n%s", mac, leases)
	}

	if out := r.berth("vm", "stop", id); !strings.Contains(out, "stopped") {
		t.Errorf("vm stop:\n%s", out)
	}
	if out := r.berth("vm", "status", id); !strings.Contains(out, "stopped") {
		t.Errorf("vm status after stop:\n%s", out)
	}
	if out, err := exec.Command("ip", "-n", r.ns, "link", "show", "tap"+id+"i0").CombinedOutput(); err == nil {
		t.Errorf("tap left after stop: %s", out)
	}
	if _, err := os.Stat(filepath.Join(r.data, "vms", id, "qmp.sock")); err == nil {
		t.Error("QMP socket left after stop")
	}
	r.berth("vm", "destroy", id)
}
