package node

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berthhq/berth/api"
)

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name string
		c    api.NodeConfig
		want []string // names of the invalid fields
	}{
		{"zero", api.NodeConfig{}, nil},
		{"all valid", api.NodeConfig{
			Description:         "rack 3, left",
			WakeOnLAN:           "aa:bb:cc:dd:ee:ff",
			StartallOnbootDelay: 300,
			Digest:              "0123abcd",
		}, nil},
		{"mac with dashes", api.NodeConfig{WakeOnLAN: "AA-BB-CC-DD-EE-FF"}, nil},
		{"mac dotted", api.NodeConfig{WakeOnLAN: "aabb.ccdd.eeff"}, nil},
		{"description at limit", api.NodeConfig{Description: strings.Repeat("x", 8192)}, nil},
		{"description too long", api.NodeConfig{Description: strings.Repeat("x", 8193)}, []string{"description"}},
		{"mac garbage", api.NodeConfig{WakeOnLAN: "not-a-mac"}, []string{"wakeonlan"}},
		{"mac too short", api.NodeConfig{WakeOnLAN: "aa:bb:cc:dd:ee"}, []string{"wakeonlan"}},
		{"mac EUI-64", api.NodeConfig{WakeOnLAN: "02:00:5e:10:00:00:00:01"}, []string{"wakeonlan"}},
		{"mac InfiniBand", api.NodeConfig{WakeOnLAN: "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}, []string{"wakeonlan"}},
		{"delay negative", api.NodeConfig{StartallOnbootDelay: -1}, []string{"startall-onboot-delay"}},
		{"delay too long", api.NodeConfig{StartallOnbootDelay: 301}, []string{"startall-onboot-delay"}},
		{"everything wrong", api.NodeConfig{
			Description:         strings.Repeat("é", 5000),
			WakeOnLAN:           "zz:zz:zz:zz:zz:zz",
			StartallOnbootDelay: 1000,
		}, []string{"description", "startall-onboot-delay", "wakeonlan"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ValidateConfig(tt.c)
			if got == nil {
				t.Fatal("ValidateConfig returned nil, want a non-nil map")
			}
			var fields []string
			for f, msg := range got {
				fields = append(fields, f)
				if msg == "" {
					t.Errorf("field %s: empty message", f)
				}
			}
			slices.Sort(fields)
			if diff := cmp.Diff(tt.want, fields); diff != "" {
				t.Errorf("invalid fields mismatch (-want +got):\n%s\nerrors: %v", diff, got)
			}
		})
	}
}
