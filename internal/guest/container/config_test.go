package container

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		bad  map[string]string // key -> substring of the message
	}{
		{"minimal", map[string]string{"image": "bb"}, nil},
		{"full", map[string]string{"image": "bb", "hostname": "web1", "memory": "512", "swap": "128", "cores": "1",
			"cpulimit": "0.5", "cpuunits": "200", "pids": "100", "privileged": "0",
			"net0": "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,hwaddr=02:00:00:00:00:01", "net1": "bridge=vmbr1,ip=dhcp"}, nil},
		{"no image", map[string]string{}, map[string]string{"image": "needs an image"}},
		{"memory too small", map[string]string{"image": "bb", "memory": "1"}, map[string]string{"memory": "from 16"}},
		{"swap without memory", map[string]string{"image": "bb", "swap": "64"}, map[string]string{"swap": "memory limit"}},
		{"too many cores", map[string]string{"image": "bb", "cores": "64"}, map[string]string{"cores": "this host has 4 CPUs"}},
		{"bad cpulimit", map[string]string{"image": "bb", "cpulimit": "fast"}, map[string]string{"cpulimit": "number of CPUs"}},
		{"bad privileged", map[string]string{"image": "bb", "privileged": "yes"}, map[string]string{"privileged": "use 1"}},
		{"relative init", map[string]string{"image": "bb", "init": "init"}, map[string]string{"init": "absolute"}},
		{"bad hostname", map[string]string{"image": "bb", "hostname": "-x"}, map[string]string{"hostname": "not a valid host name"}},
		{"net index", map[string]string{"image": "bb", "net10": "bridge=b"}, map[string]string{"net10": "net0 to net9"}},
		{"net no bridge", map[string]string{"image": "bb", "net0": "ip=dhcp"}, map[string]string{"net0": "bridge= is required"}},
		{"net bad cidr", map[string]string{"image": "bb", "net0": "bridge=b,ip=10.0.0.5/33"}, map[string]string{"net0": "neither dhcp"}},
		{"net network address", map[string]string{"image": "bb", "net0": "bridge=b,ip=10.0.0.0/24"}, map[string]string{"net0": "network address"}},
		{"net gw without ip", map[string]string{"image": "bb", "net0": "bridge=b,gw=10.0.0.1"}, map[string]string{"net0": "static ip"}},
		{"net gw family", map[string]string{"image": "bb", "net0": "bridge=b,ip=10.0.0.5/24,gw=fe80::1"}, map[string]string{"net0": "same IP version"}},
		{"net multicast mac", map[string]string{"image": "bb", "net0": "bridge=b,hwaddr=01:00:5e:00:00:01"}, map[string]string{"net0": "unicast"}},
		{"net dup name", map[string]string{"image": "bb", "net0": "bridge=b", "net1": "bridge=b,name=eth0"}, map[string]string{"net1": "also used"}},
		{"unknown key", map[string]string{"image": "bb", "colour": "blue"}, map[string]string{"colour": "unknown container option"}},
		{"ksm opt-out", map[string]string{"image": "bb", "ksm": "0"}, nil},
		{"ksm opt-in", map[string]string{"image": "bb", "ksm": "1"}, nil},
		{"bad ksm", map[string]string{"image": "bb", "ksm": "perhaps"}, map[string]string{"ksm": "use 1 to allow merging this guest's memory or 0 to opt out"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, bad := parse(api.Guest{ID: 101, Config: tc.cfg}, 4)
			if len(bad) != len(tc.bad) {
				t.Fatalf("problems %v, want keys of %v", bad, tc.bad)
			}
			for k, want := range tc.bad {
				if !strings.Contains(bad[k], want) {
					t.Errorf("%s: %q lacks %q", k, bad[k], want)
				}
			}
		})
	}
}

func TestMAC(t *testing.T) {
	a, b := MAC(101, 0), MAC(101, 1)
	if a == b || a != MAC(101, 0) {
		t.Errorf("MACs not stable and distinct: %s %s", a, b)
	}
	if !strings.HasSuffix(a[:2], "2") && !strings.ContainsAny(a[1:2], "26ae") {
		t.Errorf("%s is not locally administered unicast", a)
	}
	if len(hostVeth(999999999, 9)) > 15 {
		t.Error("host veth name longer than IFNAMSIZ-1")
	}
}

func FuzzParseNIC(f *testing.F) {
	for _, s := range []string{"name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1", "bridge=b,ip=dhcp", "bridge=b,hwaddr=02:00:00:00:00:01",
		"bridge=b,ip=fd00::5/64,gw=fd00::1", "=,,,", "bridge=b,bridge=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseNIC(0, s)
		if err != nil {
			return
		}
		if n.Bridge == "" || n.Name == "" || len(n.Name) > 15 {
			t.Fatalf("accepted %q as %+v", s, n)
		}
	})
}

// TestOpenConsoleLog: a new run's console log starts empty and appends;
// an already empty log is not truncated again (its inode is left as it
// is: no disk write for a start whose last run printed nothing).
func TestOpenConsoleLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(p, []byte("last run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := openConsoleLog(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("this run\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b, _ := os.ReadFile(p); string(b) != "this run\n" {
		t.Errorf("console log %q, want only this run's output", b)
	}

	empty := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(empty, old, old); err != nil {
		t.Fatal(err)
	}
	f, err = openConsoleLog(empty)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err := os.Stat(empty); err != nil || !st.ModTime().Equal(old) || st.Size() != 0 {
		t.Errorf("empty console log after open: %v, %v; want untouched (mtime %v)", st.ModTime(), err, old)
	}
	if f, err := openConsoleLog(filepath.Join(t.TempDir(), "new.log")); err != nil {
		t.Errorf("a new console log: %v", err)
	} else {
		f.Close()
	}
}

// TestCommandPipe: the command's end of an exec pipe is blocking (as
// programs expect of stdin and stdout), the daemon's end is not, and
// bytes pass.
func TestCommandPipe(t *testing.T) {
	for _, output := range []bool{false, true} {
		pr, pw, err := commandPipe(output)
		if err != nil {
			t.Fatal(err)
		}
		cmdEnd, daemonEnd := pr, pw
		if output {
			cmdEnd, daemonEnd = pw, pr
		}
		nonblock := func(f *os.File) bool {
			rc, err := f.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var fl int
			_ = rc.Control(func(fd uintptr) { fl, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
			return fl&unix.O_NONBLOCK != 0
		}
		if nonblock(cmdEnd) || !nonblock(daemonEnd) {
			t.Errorf("output %v: command's end non-blocking %v, daemon's %v; want false, true", output, nonblock(cmdEnd), nonblock(daemonEnd))
		}
		go func() { pw.Write([]byte("x")); pw.Close() }()
		b, err := io.ReadAll(pr)
		if err != nil || string(b) != "x" {
			t.Errorf("output %v: read %q, %v", output, b, err)
		}
		pr.Close()
	}
}
