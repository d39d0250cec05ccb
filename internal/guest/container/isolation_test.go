package container_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/vmtest"
)

func TestIsolation(t *testing.T) {
	e := newEnv(t)
	g := e.create(110, map[string]string{"memory": "48", "pids": "40"})
	e.start(g)

	// PID namespace: only the container's own processes are visible.
	out, _ := e.run(g, "ls -d /proc/[0-9]* | wc -l; cat /proc/1/cmdline | tr '\\0' ' '")
	lines := strings.Fields(out)
	if n, _ := strconv.Atoi(lines[0]); n > 5 {
		t.Errorf("guest sees %d processes: the host's leak in\n%s", n, out)
	}
	if !strings.Contains(out, "init") {
		t.Errorf("PID 1 in the guest is not its init: %q", out)
	}
	// Host files are unreachable and guest root cannot write host paths.
	marker := fmt.Sprintf("/tmp/berth-isolation-%d", os.Getpid())
	panicBefore, _ := os.ReadFile("/proc/sys/kernel/panic")
	os.Remove(marker)
	if out, code := e.run(g, "echo pwned > "+marker+"; ls /tmp; cat /etc/hostname; mount -o remount,rw /sys 2>&1; echo 77 > /proc/sys/kernel/panic 2>&1; echo done"); code != 0 || !strings.Contains(out, "done") {
		t.Errorf("probe script: code %d: %s", code, out)
	}
	if _, err := os.Stat(marker); err == nil {
		os.Remove(marker)
		t.Error("a file written by guest root appeared on the host")
	}
	if b, _ := os.ReadFile("/proc/sys/kernel/panic"); string(b) != string(panicBefore) {
		t.Error("guest root changed a host sysctl")
	}
	// Confinement: seccomp filter on, no_new_privs, capability bounding
	// set without CAP_SYS_MODULE (bit 16), /proc/timer_list masked
	// (empty) although the host's has content.
	out, _ = e.run(g, "grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status; wc -c < /proc/timer_list")
	if !strings.Contains(out, "Seccomp:\t2") || !strings.Contains(out, "NoNewPrivs:\t1") {
		t.Errorf("exec'd command is not confined:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:\t"); ok {
			bnd, _ := strconv.ParseUint(v, 16, 64)
			if bnd&(1<<16) != 0 {
				t.Errorf("CAP_SYS_MODULE is in the bounding set: %s", v)
			}
		}
	}
	if !strings.HasSuffix(out, "\n0\n") {
		t.Errorf("/proc/timer_list is not masked:\n%s", out)
	}
	// init itself is confined too.
	st, _ := e.d.Status(context.Background(), g)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID))
	if err != nil || !bytes.Contains(b, []byte("Seccomp:\t2")) {
		t.Errorf("container init is not under seccomp: %v", err)
	}
	// A read-only /sys: writes fail.
	if _, code := e.run(g, "echo x > /sys/kernel/uevent_helper"); code == 0 {
		t.Error("guest wrote to /sys")
	}

	// A fork bomb hits pids.max inside the container; the host and the
	// container survive.
	out, _ = e.run(g, "i=0; while [ $i -lt 200 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done 2>&1 | tail -1; echo forked")
	if !strings.Contains(strings.ToLower(out), "resource temporarily unavailable") && !strings.Contains(out, "can't fork") {
		t.Errorf("200 background processes did not hit the pids limit of 40:\n%s", out)
	}
	t.Log("fork bomb contained")
	e.run(g, "kill $(pidof sleep) 2>/dev/null; true")
	if s := e.status(g); s != api.GuestRunning {
		t.Fatalf("container %s after the fork bomb", s)
	}
	if err := exec.Command("true").Run(); err != nil {
		t.Fatalf("host cannot fork after the guest's fork bomb: %v", err)
	}

	t.Log("memory hog")
	// A memory hog is OOM-killed inside the container's 48 MiB; init
	// survives.
	out, code := e.run(g, "dd if=/dev/zero bs=1M count=200 2>/dev/null | (v=$(cat); echo ${#v}); echo rc=$?")
	if strings.Contains(out, "209715200") {
		t.Errorf("200 MiB held in a 48 MiB container (code %d): %s", code, out)
	}
	if s := e.status(g); s != api.GuestRunning {
		t.Fatalf("container %s after the memory hog: the OOM kill reached init", s)
	}
	if out, code := e.run(g, "echo alive"); code != 0 || out != "alive\n" {
		t.Errorf("container unusable after OOM: %d %q", code, out)
	}
}

func TestPrivileged(t *testing.T) {
	e := newEnv(t)
	g := e.create(111, map[string]string{"privileged": "1"})
	e.start(g)
	out, _ := e.run(g, "cat /proc/self/uid_map; touch /root/p")
	if !strings.Contains(out, "4294967295") {
		t.Errorf("privileged container has a user namespace: %q", out)
	}
	fi, err := os.Stat(e.dir + "/containers/111/upper/root/p")
	if err != nil || statUID(fi) != 0 {
		t.Errorf("privileged write: %v", err)
	}
}

func TestNetwork(t *testing.T) {
	e := newEnv(t)
	// A bridge and subnet of this process: container tests of other
	// checkouts may run at once.
	br, subnet := fmt.Sprintf("brct%d", os.Getpid()%100000), vmtest.Subnet(5)
	del, err := vmtest.Bridge(br, subnet+".1/24")
	if err != nil {
		t.Fatalf("create test bridge: %v", err)
	}
	t.Cleanup(del)
	// A missing bridge is refused before anything is made.
	bad := api.Guest{ID: 121, Kind: api.GuestContainer, Config: map[string]string{"image": "bb", "net0": "bridge=nosuchbr0"}}
	if f := e.d.Validate(bad); !strings.Contains(f["net0"], "does not exist") {
		t.Errorf("missing bridge: %v", f)
	}
	g := e.create(120, map[string]string{"net0": "name=eth0,bridge=" + br + ",ip=" + subnet + ".2/24,gw=" + subnet + ".1"})
	e.start(g)
	out, code := e.run(g, "cat /sys/class/net/eth0/address; ip -4 addr show eth0; ip route; ping -c 1 -W 5 "+subnet+".1")
	if code != 0 {
		t.Fatalf("ping from the container: %d\n%s", code, out)
	}
	if !strings.Contains(out, subnet+".2/24") || !strings.Contains(out, "default via "+subnet+".1") {
		t.Errorf("address or route missing:\n%s", out)
	}
	mac := strings.Fields(out)[0]
	if want := containerMAC(120, 0); mac != want {
		t.Errorf("MAC %s, want the derived %s", mac, want)
	}
	master, err := os.Readlink("/sys/class/net/veth120i0/master")
	if err != nil || !strings.HasSuffix(master, "/"+br) {
		t.Errorf("host end not in the bridge: %q %v", master, err)
	}
	if err := e.d.Stop(context.Background(), g, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/sys/class/net/veth120i0"); err == nil {
		t.Error("host veth left after stop")
	}
	var buf bytes.Buffer
	if _, err := e.d.Exec(context.Background(), g, guest.ExecRequest{Argv: []string{"true"}, Stdout: &buf}); err == nil {
		t.Error("exec in a stopped container succeeded")
	}
}

// TestNetworkIPv6 gives a NIC a static IPv6 address and gateway (the same
// netlink path as IPv4) and checks them inside, then a ping to the
// bridge's address.
func TestNetworkIPv6(t *testing.T) {
	e := newEnv(t)
	br := fmt.Sprintf("brc6%d", os.Getpid()%100000)
	prefix := fmt.Sprintf("fd77:%x::", os.Getpid()%0xffff)
	del, err := vmtest.Bridge(br, vmtest.Subnet(5)+".1/24")
	if err != nil {
		t.Fatalf("create test bridge: %v", err)
	}
	t.Cleanup(del)
	if out, err := exec.Command("ip", "-6", "addr", "add", prefix+"1/64", "dev", br, "nodad").CombinedOutput(); err != nil {
		t.Fatalf("bridge address: %v %s", err, out)
	}
	g := e.create(122, map[string]string{"net0": "name=eth0,bridge=" + br + ",ip=" + prefix + "2/64,gw=" + prefix + "1"})
	e.start(g)
	defer e.d.Stop(context.Background(), g, nil)
	out, code := e.run(g, "ip -6 addr show eth0; ip -6 route")
	if code != 0 {
		t.Fatalf("ip inside: %d\n%s", code, out)
	}
	if !strings.Contains(out, prefix+"2/64") || !strings.Contains(out, "default via "+prefix+"1") {
		t.Errorf("IPv6 address or default route missing:\n%s", out)
	}
	// Duplicate address detection may hold the address back for a
	// moment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, code = e.run(g, "ping -6 -c 1 -W 2 "+prefix+"1 || ping6 -c 1 -W 2 "+prefix+"1")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping the bridge over IPv6: %d\n%s", code, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
