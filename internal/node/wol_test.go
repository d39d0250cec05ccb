package node

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMagicPacket(t *testing.T) {
	mac := net.HardwareAddr{0x00, 0x11, 0x22, 0xaa, 0xbb, 0xcc}
	want := bytes.Repeat([]byte{0xff}, 6)
	for range 16 {
		want = append(want, 0x00, 0x11, 0x22, 0xaa, 0xbb, 0xcc)
	}
	tests := []struct {
		name    string
		mac     net.HardwareAddr
		want    []byte
		wantErr bool
	}{
		{"ethernet", mac, want, false},
		{"nil", nil, nil, true},
		{"5 bytes", mac[:5], nil, true},
		{"EUI-64", net.HardwareAddr{2, 0, 0x5e, 0x10, 0, 0, 0, 1}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MagicPacket(tt.mac)
			if (err != nil) != tt.wantErr {
				t.Fatalf("MagicPacket(%v) error = %v, want error: %v", tt.mac, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("MagicPacket(%v) mismatch (-want +got):\n%s", tt.mac, diff)
			}
			if err == nil && len(got) != 102 {
				t.Errorf("len = %d, want 102", len(got))
			}
		})
	}
}

func TestBroadcastAddr(t *testing.T) {
	tests := []struct {
		cidr string
		want string
	}{
		{"192.168.1.17/24", "192.168.1.255"},
		{"10.213.7.1/24", "10.213.7.255"},
		{"10.0.0.1/8", "10.255.255.255"},
		{"172.16.5.4/20", "172.16.15.255"},
		{"192.168.1.130/25", "192.168.1.255"},
		{"192.168.1.5/30", "192.168.1.7"},
		{"0.0.0.0/0", "255.255.255.255"},
		// No directed broadcast: fall back to the limited broadcast.
		{"192.168.1.4/31", "255.255.255.255"},
		{"192.168.1.4/32", "255.255.255.255"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			ip, n, err := net.ParseCIDR(tt.cidr)
			if err != nil {
				t.Fatal(err)
			}
			n.IP = ip // as Interface.Addrs returns it: host address, network mask
			if got := broadcastAddr(n); got.String() != tt.want {
				t.Errorf("broadcastAddr(%s) = %s, want %s", tt.cidr, got, tt.want)
			}
			// A 16-byte IPv4-in-IPv6 form must give the same answer.
			n16 := &net.IPNet{IP: ip.To16(), Mask: append(net.CIDRMask(96, 128)[:12:12], n.Mask...)}
			if got := broadcastAddr(n16); got.String() != tt.want {
				t.Errorf("broadcastAddr(16-byte %s) = %s, want %s", tt.cidr, got, tt.want)
			}
		})
	}
}

const routeHeader = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"

func TestParseDefaultRoute(t *testing.T) {
	tests := []struct {
		name    string
		table   string
		want    string
		wantErr string
	}{
		{"single", routeHeader +
			"eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
			"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
			"eth0", ""},
		{"lowest metric wins", routeHeader +
			"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
			"vmbr0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
			"vmbr0\t0000000A\t00000000\t0001\t0\t0\t100\t0000FFFF\t0\t0\t0\n",
			"vmbr0", ""},
		{"route that is down is ignored", routeHeader +
			"eth1\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n" +
			"eth0\t00000000\t010200C0\t0003\t0\t0\t50\t00000000\t0\t0\t0\n",
			"eth0", ""},
		{"zero destination but not a zero mask", routeHeader +
			"eth0\t00000000\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n",
			"", "no default IPv4 route"},
		{"empty", routeHeader, "", "no default IPv4 route"},
		{"garbage", routeHeader + "eth0\t00000000\t0\tzz\t0\t0\t0\t00000000\n", "", "bad route line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDefaultRoute(strings.NewReader(tt.table))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestWakeOnLANErrors covers failures that happen before anything is sent,
// so it needs no privileges and sends no traffic.
func TestWakeOnLANErrors(t *testing.T) {
	mac := net.HardwareAddr{0, 0x11, 0x22, 0x33, 0x44, 0x55}
	lo := loopbackName(t)
	tests := []struct {
		name    string
		mac     net.HardwareAddr
		iface   string
		wantErr string
	}{
		{"bad mac", mac[:4], lo, "has 4 bytes, want 6"},
		{"missing interface", mac, "berthnosuch0", "interface berthnosuch0 not found: check `ip link`"},
		{"loopback", mac, lo, "is a loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest, err := WakeOnLAN(context.Background(), tt.mac, tt.iface)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("WakeOnLAN() = %v, %v; want error containing %q", dest, err, tt.wantErr)
			}
		})
	}
}

func TestWakeOnLANNoDefaultRoute(t *testing.T) {
	old := procNetRoute
	t.Cleanup(func() { procNetRoute = old })
	procNetRoute = t.TempDir() + "/route"
	write(t, "/", procNetRoute, routeHeader)
	_, err := WakeOnLAN(context.Background(), net.HardwareAddr{0, 1, 2, 3, 4, 5}, "")
	if err == nil || !strings.Contains(err.Error(), "no default IPv4 route") {
		t.Fatalf("error = %v, want no default route", err)
	}
}

func loopbackName(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 {
			return ifi.Name
		}
	}
	t.Skip("no loopback interface")
	return ""
}
