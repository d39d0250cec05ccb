package task

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseUPID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want UPID
	}{
		{
			name: "proxmox example",
			in:   "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:",
			want: UPID{Node: "pve1", PID: 0x1234, PStart: 0xABCD, StartTime: 0x5F8C1D2E, Type: "vzstart", ID: "101", User: "root@pam"},
		},
		{
			name: "empty id",
			in:   "UPID:node-2:0000002A:00000000:00000000:aptupdate::alice@berth:",
			want: UPID{Node: "node-2", PID: 42, Type: "aptupdate", User: "alice@berth"},
		},
		{
			name: "nine digit pstart and fqdn node",
			in:   "UPID:host.example.org:7FFFFFFF:1A2B3C4D5:6543210F:qm_start:vm-100.disk_0:alice@berth!ci:",
			want: UPID{Node: "host.example.org", PID: math.MaxInt32, PStart: 0x1A2B3C4D5, StartTime: 0x6543210F, Type: "qm_start", ID: "vm-100.disk_0", User: "alice@berth!ci"},
		},
		{
			name: "sixteen digit fields",
			in:   "UPID:a:00000001:FFFFFFFFFFFFFFFF:7FFFFFFFFFFFFFFF:t::u:",
			want: UPID{Node: "a", PID: 1, PStart: math.MaxUint64, StartTime: math.MaxInt64, Type: "t", User: "u"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUPID(tt.in)
			if err != nil {
				t.Fatalf("ParseUPID(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseUPID(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("String() = %q, want %q", s, tt.in)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate(): %v", err)
			}
		})
	}
}

func TestParseUPIDErrors(t *testing.T) {
	const ok = "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:"
	tests := []struct {
		name    string
		in      string
		wantMsg string // substring of the error
	}{
		{"empty", "", "does not start with"},
		{"no prefix", "upid:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "does not start with"},
		{"no trailing colon", strings.TrimSuffix(ok, ":"), "does not end with"},
		{"too few fields", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:root@pam:", "has 6 ':'-separated fields"},
		{"too many fields", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:root:pam:", "has 8 ':'-separated fields"},
		{"empty node", "UPID::00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "node name is empty"},
		{"node underscore", "UPID:pve_1:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "node name"},
		{"node leading hyphen", "UPID:-pve:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "must not start or end"},
		{"node empty label", "UPID:pve..x:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "label"},
		{"pid short", "UPID:pve1:1234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "PID \"1234\" must be exactly 8 hex digits"},
		{"pid lower case", "UPID:pve1:0000abcd:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "PID \"0000abcd\" is not upper-case hex"},
		{"pid too big", "UPID:pve1:80000000:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "PID 80000000 out of range"},
		{"pid sign", "UPID:pve1:+0001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:", "not upper-case hex"},
		{"pstart padded", "UPID:pve1:00001234:00000ABCD:5F8C1D2E:vzstart:101:root@pam:", "process start \"00000ABCD\" has leading zeros"},
		{"pstart too long", "UPID:pve1:00001234:10000000000000000:5F8C1D2E:vzstart:101:root@pam:", "must be 8 to 16 hex digits"},
		{"starttime short", "UPID:pve1:00001234:0000ABCD:5F8C1D2:vzstart:101:root@pam:", "start time \"5F8C1D2\""},
		{"starttime overflow", "UPID:pve1:00001234:0000ABCD:8000000000000000:vzstart:101:root@pam:", "start time 8000000000000000 out of range"},
		{"empty type", "UPID:pve1:00001234:0000ABCD:5F8C1D2E::101:root@pam:", "type is empty"},
		{"type dot", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vz.start:101:root@pam:", "type \"vz.start\": character '.' not allowed"},
		{"id slash", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:10/1:root@pam:", "id \"10/1\": character '/' not allowed"},
		{"id space", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:1 1:root@pam:", "id \"1 1\""},
		{"empty user", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101::", "user is empty"},
		{"user slash", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:a/b@pam:", "user \"a/b@pam\": character '/' not allowed"},
		{"user percent", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:a%2F@pam:", "character '%' not allowed"},
		{"too long", "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:" + strings.Repeat("1", 250) + ":root@pam:", "at most 255 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseUPID(tt.in)
			if err == nil {
				t.Fatalf("ParseUPID(%q) = %+v, want error", tt.in, u)
			}
			if !errors.Is(err, ErrInvalidUPID) {
				t.Errorf("error %v does not wrap ErrInvalidUPID", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestUPIDValidate(t *testing.T) {
	good := UPID{Node: "pve1", PID: 1, PStart: 2, StartTime: 3, Type: "qmstart", ID: "100", User: "root@pam"}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(%+v): %v", good, err)
	}
	tests := []struct {
		name   string
		modify func(*UPID)
	}{
		{"negative pid", func(u *UPID) { u.PID = -1 }},
		{"pid too big", func(u *UPID) { u.PID = math.MaxInt32 + 1 }},
		{"negative start", func(u *UPID) { u.StartTime = -1 }},
		{"bad node", func(u *UPID) { u.Node = "a:b" }},
		{"colon in user", func(u *UPID) { u.User = "token:name" }},
		{"too long", func(u *UPID) { u.ID = strings.Repeat("x", 128); u.User = strings.Repeat("y", 100) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := good
			tt.modify(&u)
			err := u.Validate()
			if !errors.Is(err, ErrInvalidUPID) {
				t.Fatalf("Validate(%+v) = %v, want ErrInvalidUPID", u, err)
			}
			// Whatever Validate rejects, ParseUPID must reject too.
			if p, err := ParseUPID(u.String()); err == nil {
				t.Errorf("ParseUPID(%q) accepted an invalid UPID: %+v", u.String(), p)
			}
		})
	}
}

func FuzzParseUPID(f *testing.F) {
	for _, s := range []string{
		"UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:",
		"UPID:node-2:0000002A:00000000:00000000:aptupdate::alice@berth:",
		"UPID:host.example.org:7FFFFFFF:1A2B3C4D5:6543210F:qm_start:vm-100.disk_0:alice@berth!ci:",
		"UPID:a:00000001:FFFFFFFFFFFFFFFF:7FFFFFFFFFFFFFFF:t::u:",
		"UPID:pve1:0000abcd:0000ABCD:5F8C1D2E:vzstart:101:root@pam:",
		"UPID:pve1:00001234:00000ABCD:5F8C1D2E:vzstart:101:root@pam:",
		"UPID::::::::",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUPID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidUPID) {
				t.Fatalf("ParseUPID(%q) error %v does not wrap ErrInvalidUPID", s, err)
			}
			return
		}
		if err := u.Validate(); err != nil {
			t.Fatalf("ParseUPID(%q) = %+v, which fails Validate: %v", s, u, err)
		}
		out := u.String()
		u2, err := ParseUPID(out)
		if err != nil {
			t.Fatalf("ParseUPID(String()) of %q = %q: %v", s, out, err)
		}
		if u2 != u {
			t.Fatalf("round trip of %q: %+v != %+v", s, u2, u)
		}
		// Only canonical strings parse, so String must reproduce the input.
		if out != s {
			t.Fatalf("String() = %q, want the input %q", out, s)
		}
		// Path safety: a single segment of safe characters.
		if strings.ContainsAny(s, "/\\?#% \t\n\x00") {
			t.Fatalf("accepted UPID %q contains a character unsafe in a path", s)
		}
	})
}
