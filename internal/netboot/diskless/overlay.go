package diskless

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// chunk is the copy-on-write unit: the ext4 block size, so a file system
// block written by the client never drags its neighbours along.
const chunk = 4096

// mapMagic starts an overlay's map file.
const mapMagic = "BERTHCOW1\n"

// mapHeader is the map file's header: magic, chunk size, the base image's
// size and modification time (a changed base makes the overlay stale).
const mapHeader = 64

// overlay is one client's writable layer over a shared read-only base:
// overlay.img, a sparse file as large as the base, holds the chunks the
// client wrote; overlay.map records which chunks those are, one bit each.
//
// Durability follows a disk with a volatile write cache, which is what the
// client's kernel expects of an NBD device: a write is durable once a
// FLUSH (or a FUA write) is acknowledged. At a flush the overlay data is
// fsynced before the map pages that point at it are written and fsynced,
// so after a crash at any point every chunk marked in the map holds the
// data that was written to it.
type overlay struct {
	mu      sync.RWMutex
	base    *os.File
	data    *os.File
	mapf    *os.File
	size    int64
	bits    []uint64
	dirty   map[int64]bool // map file pages (of 4096 bytes of bits) to write at the next flush
	scratch []byte
}

// openOverlay opens (creating if needed) the overlay in dir over base.
func openOverlay(dir, basePath string) (*overlay, error) {
	base, err := os.Open(basePath)
	if err != nil {
		return nil, fmt.Errorf("open base image: %w", err)
	}
	fi, err := base.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		base.Close()
		return nil, fmt.Errorf("base image %s is not a regular file", basePath)
	}
	o := &overlay{base: base, size: fi.Size(), dirty: map[int64]bool{}, scratch: make([]byte, chunk)}
	fail := func(err error) (*overlay, error) {
		o.close()
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	nchunks := (o.size + chunk - 1) / chunk
	o.bits = make([]uint64, (nchunks+63)/64)
	header := make([]byte, mapHeader)
	copy(header, mapMagic)
	binary.BigEndian.PutUint32(header[16:], chunk)
	binary.BigEndian.PutUint64(header[24:], uint64(o.size))
	binary.BigEndian.PutUint64(header[32:], uint64(fi.ModTime().UnixNano()))

	mapPath := dir + "/overlay.map"
	o.mapf, err = os.OpenFile(mapPath, os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A new client: write the empty map and the data file, then make
		// the names durable. A crash before the rename leaves no map, and
		// the next start begins again from here.
		tmp := mapPath + ".tmp"
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fail(err)
		}
		if _, err := f.WriteAt(header, 0); err != nil {
			f.Close()
			return fail(err)
		}
		if err := f.Truncate(mapHeader + int64(len(o.bits))*8); err != nil {
			f.Close()
			return fail(err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fail(err)
		}
		f.Close()
		d, err := os.OpenFile(dir+"/overlay.img", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fail(err)
		}
		if err := d.Truncate(o.size); err != nil {
			d.Close()
			return fail(err)
		}
		d.Close()
		if err := os.Rename(tmp, mapPath); err != nil {
			return fail(err)
		}
		if err := syncDir(dir); err != nil {
			return fail(err)
		}
		if o.mapf, err = os.OpenFile(mapPath, os.O_RDWR, 0); err != nil {
			return fail(err)
		}
	case err != nil:
		return fail(err)
	default:
		got := make([]byte, mapHeader)
		if _, err := o.mapf.ReadAt(got, 0); err != nil {
			return fail(fmt.Errorf("read %s: %w", mapPath, err))
		}
		if string(got[:len(mapMagic)]) != mapMagic || binary.BigEndian.Uint32(got[16:]) != chunk {
			return fail(fmt.Errorf("%s is not a berth overlay map", mapPath))
		}
		if string(got[24:40]) != string(header[24:40]) {
			return fail(fmt.Errorf("the base image %s changed (size or time) since this client's overlay was made: "+
				"its writes would no longer fit; reset the client's root to start over", basePath))
		}
		raw := make([]byte, len(o.bits)*8)
		if _, err := o.mapf.ReadAt(raw, mapHeader); err != nil && err != io.EOF {
			return fail(fmt.Errorf("read %s: %w", mapPath, err))
		}
		for i := range o.bits {
			o.bits[i] = binary.LittleEndian.Uint64(raw[i*8:])
		}
	}
	if o.data, err = os.OpenFile(dir+"/overlay.img", os.O_RDWR, 0); err != nil {
		return fail(err)
	}
	return o, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (o *overlay) has(c int64) bool { return o.bits[c/64]&(1<<(c%64)) != 0 }

func (o *overlay) mark(c int64) {
	o.bits[c/64] |= 1 << (c % 64)
	o.dirty[(c/64*8)/4096] = true
}

// ReadAt reads from the overlay where the client wrote, from the base
// elsewhere, in as few reads as the runs allow.
func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > o.size {
		return 0, fmt.Errorf("read past the end of the %d-byte image", o.size)
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		c := pos / chunk
		fromOverlay := o.has(c)
		// Extend the run while chunks come from the same layer.
		end := (c + 1) * chunk
		for end < off+int64(len(p)) && o.has(end/chunk) == fromOverlay {
			end += chunk
		}
		end = min(end, off+int64(len(p)))
		src := o.base
		if fromOverlay {
			src = o.data
		}
		if _, err := src.ReadAt(p[done:end-off], pos); err != nil {
			return done, err
		}
		done = int(end - off)
	}
	return done, nil
}

// WriteAt writes into the overlay; a chunk written only in part is first
// filled from the base.
func (o *overlay) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > o.size {
		return 0, fmt.Errorf("write past the end of the %d-byte image", o.size)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	end := off + int64(len(p))
	for c := off / chunk; c*chunk < end; c++ {
		cs, ce := c*chunk, min((c+1)*chunk, o.size)
		if o.has(c) || (off <= cs && end >= ce) {
			continue
		}
		// Copy the base chunk up before a partial write into it.
		buf := o.scratch[:ce-cs]
		if _, err := o.base.ReadAt(buf, cs); err != nil {
			return 0, err
		}
		if _, err := o.data.WriteAt(buf, cs); err != nil {
			return 0, err
		}
	}
	if _, err := o.data.WriteAt(p, off); err != nil {
		return 0, err
	}
	for c := off / chunk; c*chunk < end; c++ {
		if !o.has(c) {
			o.mark(c)
		}
	}
	return len(p), nil
}

// Flush makes every acknowledged write durable.
func (o *overlay) Flush() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.data.Sync(); err != nil {
		return err
	}
	if len(o.dirty) == 0 {
		return nil
	}
	raw := make([]byte, 4096)
	for page := range o.dirty {
		first := page * 4096 / 8
		n := 0
		for i := first; i < int64(len(o.bits)) && n < 4096; i++ {
			binary.LittleEndian.PutUint64(raw[n:], o.bits[i])
			n += 8
		}
		if _, err := o.mapf.WriteAt(raw[:n], mapHeader+page*4096); err != nil {
			return err
		}
	}
	if err := o.mapf.Sync(); err != nil {
		return err
	}
	clear(o.dirty)
	return nil
}

// written returns how many bytes of chunks the client has written.
func (o *overlay) written() int64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var n int64
	for _, w := range o.bits {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n * chunk
}

func (o *overlay) close() error {
	var err error
	for _, f := range []*os.File{o.base, o.data, o.mapf} {
		if f != nil {
			if e := f.Close(); e != nil && err == nil {
				err = e
			}
		}
	}
	return err
}
