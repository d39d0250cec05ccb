package uml

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"
)

type tcpListener struct {
	net.Listener
	port int
}

func listenAny() (tcpListener, error) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		return tcpListener{}, err
	}
	return tcpListener{ln, ln.Addr().(*net.TCPAddr).Port}, nil
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg       map[string]string
		key, want string
	}{
		{map[string]string{"disk0": "base.img,cow"}, "disk0", "absolute"},
		{map[string]string{"disk0": "/b.img,cow,ro"}, "disk0", "exclude"},
		{map[string]string{"disk0": "/b.img,snap"}, "disk0", "unknown disk flag"},
		{map[string]string{"disk0": "image=../etc"}, "disk0", "not an image name"},
		{map[string]string{"disk0": "image=bb,cow,ro"}, "disk0", "exclude"},
		{map[string]string{"net0": "tuntap"}, "net0", "bridge="},
		{map[string]string{"net0": "tuntap,bridge=br0,macaddr=01:00:00:00:00:01"}, "net0", "unicast"},
		{map[string]string{"net0": "mcast,10.0.0.1"}, "net0", "multicast group"},
		{map[string]string{"net0": "slirp"}, "net0", "tuntap,bridge=BR"},
		{map[string]string{"console": "xterm"}, "console", "use fd"},
		{map[string]string{"console": "port:99999"}, "console", "1 to 65535"},
		{map[string]string{"serial": "fd"}, "serial", "pty, pts"},
		{map[string]string{"console": "port:9000", "serial": "port:9000"}, "serial", "already the console's"},
		{map[string]string{"append": "mem=1G"}, "append", "set by berth"},
		{map[string]string{"append": "ubd1=/x"}, "append", "set by berth"},
		{map[string]string{"memory": "8"}, "memory", "16 to"},
		{map[string]string{"cores": "2"}, "cores", "unknown UML option"},
		{map[string]string{"ksm": "1"}, "ksm", "shared file mapping, which KSM cannot merge"},
		{map[string]string{"ksm": "sometimes"}, "ksm", "use 1 to allow merging"},
	} {
		_, errs := ParseSpec(tc.cfg)
		if !strings.Contains(errs[tc.key], tc.want) {
			t.Errorf("ParseSpec(%v)[%s] = %q, want %q", tc.cfg, tc.key, errs[tc.key], tc.want)
		}
	}
	if _, errs := ParseSpec(map[string]string{"ksm": "0"}); errs != nil {
		t.Errorf("ParseSpec(ksm=0) = %v: the opt-out always holds for UML and must be accepted", errs)
	}
}

// TestImageDisk checks that a disk from the image store is always shared:
// copy-on-write unless read-only.
func TestImageDisk(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Disk
	}{
		{"image=bb", Disk{Key: "disk0", ImageName: "bb", COW: true}},
		{"image=bb,cow", Disk{Key: "disk0", ImageName: "bb", COW: true}},
		{"image=bb,ro", Disk{Key: "disk0", ImageName: "bb", RO: true}},
		{"/b.img", Disk{Key: "disk0", Image: "/b.img"}},
	} {
		got, err := ParseDisk("disk0", 0, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDisk(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestArgs(t *testing.T) {
	s, errs := ParseSpec(map[string]string{"memory": "64", "disk0": "/img/base.ext4,cow", "disk1": "/img/data,ro",
		"net0": "tuntap,bridge=br0", "net1": "mcast,239.1.2.3:2000", "net2": "daemon", "console": "pty", "append": "quiet"})
	if errs != nil {
		t.Fatal(errs)
	}
	got := strings.Join(Args(101, s), " ")
	want := "mem=64M umid=uml uml_dir=. berth.guest=101 ubd0=disk0.cow,/img/base.ext4 ubd1r=/img/data root=/dev/ubda " +
		"eth0=tuntap,tap101u0," + DefaultMAC(101, 0) + " eth1=mcast," + DefaultMAC(101, 1) + ",239.1.2.3,2000,1 " +
		"eth2=daemon," + DefaultMAC(101, 2) + ",unix,/var/run/uml-utilities/uml_switch.ctl con=null con0=pty ssl=null quiet"
	if got != want {
		t.Errorf("Args =\n%s\nwant\n%s", got, want)
	}
	s.Console = "fd"
	if !strings.Contains(strings.Join(Args(101, s), " "), "con0=fd:0,fd:1") {
		t.Error("console fd does not map to con0=fd:0,fd:1")
	}
}

func cowHeader(backing string, mtime uint32, size uint64) []byte {
	b := make([]byte, cowHeaderV3)
	binary.BigEndian.PutUint32(b[0:], cowMagic)
	binary.BigEndian.PutUint32(b[4:], 3)
	binary.BigEndian.PutUint32(b[8:], mtime)
	binary.BigEndian.PutUint64(b[12:], size)
	binary.BigEndian.PutUint32(b[20:], 512)
	copy(b[32:], backing)
	return b
}

func TestParseCOWHeader(t *testing.T) {
	h, err := ParseCOWHeader(cowHeader("/img/base.ext4", 1700000000, 1<<26))
	if err != nil || h.Backing != "/img/base.ext4" || h.MTime != 1700000000 || h.Size != 1<<26 {
		t.Errorf("got %+v, %v", h, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 8), cowHeader("", 1, 1), cowHeader("/x", 1, 1)[:100]} {
		if _, err := ParseCOWHeader(bad); err == nil {
			t.Errorf("accepted %d bytes", len(bad))
		}
	}
}

func FuzzParseCOWHeader(f *testing.F) {
	f.Add(cowHeader("/img/base.ext4", 1, 2))
	f.Add([]byte("OOOM"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseCOWHeader(b)
		if err == nil && (h.Backing == "" || len(h.Backing) > cowPathLenV3) {
			t.Fatalf("bad header accepted: %+v", h)
		}
	})
}

func FuzzParseSpec(f *testing.F) {
	f.Add("/img/a,cow", "tuntap,bridge=br0,macaddr=fe:fd:00:00:00:01", "port:9000")
	f.Add("/img/b,ro", "mcast,239.0.0.1:1102", "pty")
	f.Add("x", "daemon,/run/s", "fd")
	f.Fuzz(func(t *testing.T, disk, nic, console string) {
		s, errs := ParseSpec(map[string]string{"disk0": disk, "net0": nic, "console": console})
		if errs != nil {
			return
		}
		for _, a := range Args(100, s) {
			if strings.ContainsAny(a, " \n\x00") {
				t.Fatalf("argument %q would split", a)
			}
		}
	})
}
