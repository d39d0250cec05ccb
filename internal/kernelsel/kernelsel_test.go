package kernelsel

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSelect(t *testing.T) {
	pve := []string{"5.15.131-1-pve", "6.2.16-19-pve", "6.2.16-20-pve", "6.5.11-3-pve", "6.5.11-4-pve", "6.5.11-6-pve"}
	tests := []struct {
		name string
		in   Input
		want []string
	}{
		{"proxmox rig: running, two newest, newest of previous series",
			Input{Installed: pve, Running: "6.5.11-3-pve"},
			[]string{"6.5.11-6-pve", "6.5.11-4-pve", "6.5.11-3-pve", "6.2.16-20-pve"}},
		{"running not installed is dropped",
			Input{Installed: []string{"6.1.0-27-amd64"}, Running: "6.6.6-host"},
			[]string{"6.1.0-27-amd64"}},
		{"manual, pins and the installing version are added",
			Input{Installed: pve, Manual: []string{"5.15.131-1-pve"}, Pin: "6.2.16-19-pve", NextBoot: "6.2.16-19-pve", Installing: "6.8.1-1-pve"},
			[]string{"6.8.1-1-pve", "6.5.11-6-pve", "6.5.11-4-pve", "6.2.16-20-pve", "6.2.16-19-pve", "5.15.131-1-pve"}},
		{"version order, not lexicographic",
			Input{Installed: []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-8-amd64"}},
			[]string{"6.1.0-10-amd64", "6.1.0-9-amd64"}},
		{"nothing installed", Input{}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(Select(tt.in), tt.want); diff != "" {
				t.Errorf("Select mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"6.1.0-10-amd64", "6.1.0-9-amd64", 1},
		{"6.1", "6.1.0", -1},
		{"6.5.11-4-pve", "6.5.11-4-pve", 0},
		{"5.15.131-1-pve", "6.2.16-20-pve", -1},
		{"6.01", "6.1", 0},
	} {
		if got := Compare(tt.a, tt.b); got != tt.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestSeries(t *testing.T) {
	for v, want := range map[string]string{"6.1.0-27-amd64": "6.1", "6.5.11-4-pve": "6.5", "6": "6", "6.12rc1": "6.12"} {
		if got := Series(v); got != want {
			t.Errorf("Series(%q) = %q, want %q", v, got, want)
		}
	}
}
