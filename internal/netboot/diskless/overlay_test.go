package diskless

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func makeBase(t testing.TB, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.IntN(256))
	}
	p := filepath.Join(t.TempDir(), "base.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// TestOverlayModel checks random reads and writes against an in-memory
// model, across a flush and reopen.
func TestOverlayModel(t *testing.T) {
	const size = 1<<20 + 1000 // not a multiple of the chunk
	base, data := makeBase(t, size)
	model := bytes.Clone(data)
	dir := filepath.Join(t.TempDir(), "client")
	o, err := openOverlay(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 400; i++ {
		off := r.IntN(size - 1)
		n := 1 + r.IntN(min(size-off, 20000))
		if r.IntN(2) == 0 {
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(r.IntN(256))
			}
			if _, err := o.WriteAt(p, int64(off)); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		} else {
			p := make([]byte, n)
			if _, err := o.ReadAt(p, int64(off)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, model[off:off+n]) {
				t.Fatalf("step %d: read %d@%d differs from the model", i, n, off)
			}
		}
		if i == 200 {
			if err := o.Flush(); err != nil {
				t.Fatal(err)
			}
			o.close()
			if o, err = openOverlay(dir, base); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := o.Flush(); err != nil {
		t.Fatal(err)
	}
	o.close()
	o, err = openOverlay(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	all := make([]byte, size)
	if _, err := o.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, model) {
		t.Fatal("after reopen the image differs from the model")
	}
	// The base is never written.
	b, _ := os.ReadFile(base)
	if !bytes.Equal(b, data) {
		t.Fatal("the base image was modified")
	}
	if _, err := o.WriteAt([]byte{1}, size); err == nil {
		t.Error("a write past the end succeeded")
	}
}

// TestOverlayUnflushedNotMarked: writes not flushed are not in the map
// after a reopen (a crash), and the image reads as the base there.
func TestOverlayUnflushedNotMarked(t *testing.T) {
	base, data := makeBase(t, 64<<10)
	dir := filepath.Join(t.TempDir(), "c")
	o, _ := openOverlay(dir, base)
	o.WriteAt(bytes.Repeat([]byte{0xaa}, 4096), 0)
	o.Flush()
	o.WriteAt(bytes.Repeat([]byte{0xbb}, 4096), 8192)
	o.close() // no flush: as if the server died
	o, err := openOverlay(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	p := make([]byte, 4096)
	o.ReadAt(p, 0)
	if p[0] != 0xaa {
		t.Error("flushed write lost")
	}
	o.ReadAt(p, 8192)
	if !bytes.Equal(p, data[8192:12288]) {
		t.Error("an unflushed chunk was marked written")
	}
}

func TestOverlayBaseChanged(t *testing.T) {
	base, _ := makeBase(t, 64<<10)
	dir := filepath.Join(t.TempDir(), "c")
	o, err := openOverlay(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	o.close()
	later := time.Now().Add(time.Hour)
	os.Chtimes(base, later, later)
	if _, err := openOverlay(dir, base); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("err = %v, want a changed-base error", err)
	}
}
