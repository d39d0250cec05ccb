package ctinit

import (
	"os"
	"testing"
)

func TestParseStartTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 12345 1000 2 18446744073709551615\n", 12345, true},
		{"42 (a b) (c)) R 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n", 777, true},
		{"42 (short) R 1\n", 0, false},
		{"no parens", 0, false},
	} {
		got, err := ParseStartTime([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseStartTime(%q) = %d, %v", tc.in, got, err)
		}
	}
	if st, err := StartTime(os.Getpid()); err != nil || st == 0 {
		t.Errorf("own start time: %d %v", st, err)
	}
}

func FuzzParseStartTime(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 12345 1000 2\n"))
	f.Add([]byte("42 (a b) (c)) R 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseStartTime(b)
	})
}
