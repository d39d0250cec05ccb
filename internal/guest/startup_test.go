package guest

import (
	"reflect"
	"strings"
	"testing"

	"github.com/berthhq/berth/api"
)

func TestParseStartup(t *testing.T) {
	tests := []struct {
		in   string
		want api.Startup
	}{
		{"", api.Startup{}},
		{"order=1", api.Startup{Order: 1}},
		{"order=3,up=30,down=60", api.Startup{Order: 3, Up: 30, Down: 60}},
		{"down=60,order=3", api.Startup{Order: 3, Down: 60}},
		{" up = 5 , down=0 ", api.Startup{Up: 5}},
		{"up=86400", api.Startup{Up: 86400}},
	}
	for _, tt := range tests {
		got, err := ParseStartup(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseStartup(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseStartupErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"order=x", `order="x" is not an integer`},
		{"order=", `order="" is not an integer`},
		{"order=1.5", "not an integer"},
		{"prio=1", `unknown key "prio"`},
		{"order=-1", "order -1 must be at least 1"},
		{"order=0", "order 0 must be at least 1"},
		{"up=-5", "up -5 must be 0 to 86400 seconds"},
		{"down=-1", "down -1 must be 0 to 86400 seconds"},
		{"down=86401", "down 86401 must be 0 to 86400"},
		{"order=1,order=2", "order given twice"},
		{"order", "is not key=value"},
		{"order=1,", "is not key=value"},
		{"=1", "is not key=value"},
	}
	for _, tt := range tests {
		got, err := ParseStartup(tt.in)
		if err == nil {
			t.Errorf("ParseStartup(%q) = %+v, want error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseStartup(%q) error %q does not contain %q", tt.in, err, tt.want)
		}
	}
}

func TestStartupRoundTrip(t *testing.T) {
	for _, st := range []api.Startup{
		{},
		{Order: 1},
		{Up: 10},
		{Down: 300},
		{Order: 2, Up: 5},
		{Order: 7, Up: 30, Down: 120},
	} {
		s := FormatStartup(st)
		got, err := ParseStartup(s)
		if err != nil || got != st {
			t.Errorf("ParseStartup(FormatStartup(%+v) = %q) = %+v, %v", st, s, got, err)
		}
	}
	if got := FormatStartup(api.Startup{Order: 3, Up: 30, Down: 60}); got != "order=3,up=30,down=60" {
		t.Errorf("FormatStartup = %q", got)
	}
}

// g is shorthand for a guest in ordering tests.
func g(id int, onboot bool, order int) api.Guest {
	return api.Guest{ID: id, Kind: api.GuestContainer, OnBoot: onboot, Startup: api.Startup{Order: order}}
}

func ids(gs []api.Guest) []int {
	out := []int{}
	for _, g := range gs {
		out = append(out, g.ID)
	}
	return out
}

func TestStartStopOrder(t *testing.T) {
	tests := []struct {
		name      string
		in        []api.Guest
		wantStart []int
		wantStop  []int
	}{
		{"empty", nil, []int{}, []int{}},
		{
			"by order then id, unordered last",
			[]api.Guest{g(105, true, 0), g(104, true, 2), g(103, true, 1), g(102, true, 0), g(101, true, 2)},
			[]int{103, 101, 104, 102, 105},
			[]int{105, 102, 104, 101, 103},
		},
		{
			"start skips non-onboot, stop includes them",
			[]api.Guest{g(101, false, 1), g(102, true, 2), g(103, false, 0), g(104, true, 0)},
			[]int{102, 104},
			[]int{104, 103, 102, 101},
		},
		{
			"order compares numerically",
			[]api.Guest{g(101, true, 10), g(102, true, 9), g(103, true, 100)},
			[]int{102, 101, 103},
			[]int{103, 101, 102},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]api.Guest(nil), tt.in...)
			if got := ids(StartOrder(tt.in)); !reflect.DeepEqual(got, tt.wantStart) {
				t.Errorf("StartOrder = %v, want %v", got, tt.wantStart)
			}
			if got := ids(StopOrder(tt.in)); !reflect.DeepEqual(got, tt.wantStop) {
				t.Errorf("StopOrder = %v, want %v", got, tt.wantStop)
			}
			if !reflect.DeepEqual(in, tt.in) {
				t.Error("input was modified")
			}
		})
	}
}
