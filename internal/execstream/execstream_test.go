package execstream

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	out := &Writer{Mu: &mu, W: &buf, Typ: 1}
	if _, err := out.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, 3, []byte{0, 0, 0, 7}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, 0, nil); err != nil {
		t.Fatal(err)
	}
	type frame struct {
		Typ     byte
		Payload []byte
	}
	var got []frame
	for {
		typ, p, err := ReadFrame(&buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, frame{typ, p})
	}
	want := []frame{{1, []byte("hello")}, {3, []byte{0, 0, 0, 7}}, {0, []byte{}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("frames mismatch (-want +got):\n%s", diff)
	}
}

func TestReadFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{1, 0}, io.ErrUnexpectedEOF},
		{"short payload", []byte{1, 0, 0, 0, 5, 'a'}, io.ErrUnexpectedEOF},
		{"too large", []byte{1, 0x7f, 0, 0, 0}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ReadFrame(bytes.NewReader(tc.in)); !errors.Is(err, tc.want) {
				t.Errorf("ReadFrame = %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 'h', 'i'})
	f.Add([]byte{3, 0, 0, 0, 4, 0, 0, 0, 1})
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			typ, p, err := ReadFrame(r)
			if err != nil {
				return
			}
			if len(p) > MaxPayload {
				t.Fatalf("payload of %d bytes", len(p))
			}
			// What was read re-encodes to the same bytes.
			var buf bytes.Buffer
			if err := WriteFrame(&buf, typ, p); err != nil {
				t.Fatal(err)
			}
			if buf.Len() != 5+len(p) {
				t.Fatalf("re-encoded to %d bytes", buf.Len())
			}
		}
	})
}
