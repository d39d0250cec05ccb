package esp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"strings"

	"github.com/berthhq/berth/internal/fat"
)

// volume is one ESP opened for reading (package fat) and writing (mtools
// at the partition's offset in its disk).
type volume struct {
	t    *Tool
	p    Partition
	disk *os.File
	fs   *fat.FS
}

func (t *Tool) open(p Partition) (*volume, error) {
	f, err := os.OpenFile(p.DiskPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p.DiskPath, err)
	}
	v := &volume{t: t, p: p, disk: f}
	if err := v.reload(); err != nil {
		f.Close()
		return nil, err
	}
	return v, nil
}

// reload re-reads the boot sector and FAT after mtools changed them.
func (v *volume) reload() error {
	fsys, err := fat.Open(v.disk, v.p.Start)
	if err != nil {
		return fmt.Errorf("%s: %w", v.p.Name, err)
	}
	v.fs = fsys
	return nil
}

func (v *volume) close() error {
	err := v.disk.Sync()
	if cerr := v.disk.Close(); err == nil {
		err = cerr
	}
	return err
}

func (v *volume) exists(p string) bool {
	_, err := v.fs.Stat(p)
	return err == nil
}

func (v *volume) isDir(p string) bool {
	e, err := v.fs.Stat(p)
	return err == nil && e.IsDir
}

func (v *volume) hash(p string) (size int64, sum [32]byte, err error) {
	h := sha256.New()
	err = v.fs.WalkFile(p, func(b []byte) error {
		size += int64(len(b))
		h.Write(b)
		return nil
	})
	copy(sum[:], h.Sum(nil))
	return size, sum, err
}

// mtools runs one mtools command against the ESP.
func (v *volume) mtools(ctx context.Context, step, cmd string, args ...string) error {
	if v.t.Hook != nil {
		if err := v.t.Hook(step); err != nil {
			return err
		}
	}
	img := fmt.Sprintf("%s@@%d", v.p.DiskPath, v.p.Start)
	c := exec.CommandContext(ctx, cmd, append([]string{"-i", img}, args...)...)
	c.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "MTOOLS_LOWER_CASE=0")
	out, err := c.CombinedOutput()
	v.t.Stats.Ops++
	if err != nil {
		return fmt.Errorf("%s on %s: %s %s: %w", step, v.p.Name, cmd, strings.TrimSpace(string(out)), err)
	}
	return v.reload()
}

func (v *volume) mkdirAll(ctx context.Context, dir string) error {
	cur := ""
	for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		cur = path.Join(cur, part)
		if v.isDir(cur) {
			continue
		}
		if v.exists(cur) {
			if err := v.mtools(ctx, "remove "+cur, "mdel", "::/"+cur); err != nil {
				return err
			}
		}
		if err := v.mtools(ctx, "mkdir "+cur, "mmd", "::/"+cur); err != nil {
			return err
		}
	}
	return nil
}

// put makes dst hold the contents of the host file src (or data, when src
// is ""), unless it already does. The new contents go to dst.new first and
// are read back and compared; only then is dst.new renamed over dst, one
// directory update, so dst is always either the old or the new file.
func (v *volume) put(ctx context.Context, dst, src string, data []byte) (bool, error) {
	want, wsize, err := sourceHash(src, data)
	if err != nil {
		return false, err
	}
	if size, got, err := v.hash(dst); err == nil && size == wsize && got == want {
		return false, nil
	}
	if err := v.mkdirAll(ctx, path.Dir(dst)); err != nil {
		return false, err
	}
	if src == "" {
		tmp, err := os.CreateTemp("", "berth-esp-*")
		if err != nil {
			return false, err
		}
		defer os.Remove(tmp.Name())
		if _, err := tmp.Write(data); err != nil {
			tmp.Close()
			return false, err
		}
		if err := tmp.Close(); err != nil {
			return false, err
		}
		src = tmp.Name()
	}
	tmpName := dst + ".new"
	if err := v.mtools(ctx, "write "+tmpName, "mcopy", "-o", "-D", "o", src, "::/"+tmpName); err != nil {
		return false, err
	}
	v.t.Stats.Bytes += wsize
	if size, got, err := v.hash(tmpName); err != nil || size != wsize || got != want {
		return false, fmt.Errorf("verify %s on %s: read back %d bytes that differ from the %d written (err %v): the ESP may be full or failing", tmpName, v.p.Name, size, wsize, err)
	}
	if err := v.mtools(ctx, "rename "+tmpName+" to "+dst, "mren", "-D", "o", "::/"+tmpName, "::/"+dst); err != nil {
		return false, err
	}
	return true, nil
}

func sourceHash(src string, data []byte) ([32]byte, int64, error) {
	if src == "" {
		return sha256.Sum256(data), int64(len(data)), nil
	}
	f, err := os.Open(src)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

func (v *volume) remove(ctx context.Context, p string) error {
	e, err := v.fs.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if e.IsDir {
		return v.mtools(ctx, "remove "+p, "mdeltree", "::/"+p)
	}
	return v.mtools(ctx, "remove "+p, "mdel", "::/"+p)
}

// removeLeftovers deletes *.new files an interrupted run left behind.
func (v *volume) removeLeftovers(ctx context.Context, dirs ...string) error {
	for _, d := range dirs {
		ents, err := v.fs.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.IsDir && strings.HasSuffix(e.Name, ".new") {
				if err := v.remove(ctx, path.Join(d, e.Name)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
