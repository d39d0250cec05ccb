package esp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"strings"
	"time"

	"github.com/berthhq/berth/internal/fat"
)

// volume is one ESP opened for reading (package fat) and writing (mtools
// at the partition's offset in its disk).
type volume struct {
	t    *Tool
	p    Partition
	disk *os.File
	fs   *fat.FS
	// strict turns off the size+mtime shortcut: files are compared byte
	// for byte (for versions whose entry is not written yet, where an
	// interrupted copy may have left a file of the right size).
	strict bool
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
	wsize := int64(len(data))
	var mtime time.Time
	if src != "" {
		st, err := os.Stat(src)
		if err != nil {
			return false, err
		}
		wsize, mtime = st.Size(), st.ModTime()
	}
	if e, err := v.fs.Stat(dst); err == nil && !e.IsDir && int64(e.Size) == wsize {
		// Same size and modification time (mcopy -m keeps the source's,
		// FAT has 2 s resolution): unchanged, as rsync decides. Otherwise
		// the contents are compared before anything is rewritten.
		if !v.strict && !mtime.IsZero() && !e.ModTime.IsZero() && absDur(e.ModTime.Sub(mtime)) < 2*time.Second {
			return false, nil
		}
		if v.equal(dst, src, data) == nil {
			return false, nil
		}
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
	if err := v.mtools(ctx, "write "+tmpName, "mcopy", "-m", "-o", "-D", "o", src, "::/"+tmpName); err != nil {
		return false, err
	}
	v.t.Stats.Bytes += wsize
	if err := v.equal(tmpName, src, nil); err != nil {
		return false, fmt.Errorf("verify %s on %s: %w: the ESP may be full or failing", tmpName, v.p.Name, err)
	}
	if err := v.mtools(ctx, "rename "+tmpName+" to "+dst, "mren", "-D", "o", "::/"+tmpName, "::/"+dst); err != nil {
		return false, err
	}
	return true, nil
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// putNew copies host files that do not exist on the ESP yet into dir with
// one mcopy, then reads each back and compares it. Writing them under
// their final names is safe because nothing refers to them until their
// loader entry is written, which happens only after this; an interrupted
// copy leaves a file the next refresh replaces. Files that exist go
// through put.
func (v *volume) putNew(ctx context.Context, dir string, srcs []string) error {
	var fresh []string
	for _, src := range srcs {
		dst := path.Join(dir, path.Base(src))
		if v.exists(dst) {
			if _, err := v.put(ctx, dst, src, nil); err != nil {
				return err
			}
			continue
		}
		fresh = append(fresh, src)
	}
	if len(fresh) == 0 {
		return nil
	}
	if err := v.mkdirAll(ctx, dir); err != nil {
		return err
	}
	args := append([]string{"-m", "-o", "-D", "o"}, fresh...)
	target := "::/"
	if dir != "" {
		target += dir + "/"
	}
	if err := v.mtools(ctx, "write "+path.Join(dir, strings.Join(baseNames(fresh), ",")), "mcopy", append(args, target)...); err != nil {
		return err
	}
	for _, src := range fresh {
		st, err := os.Stat(src)
		if err != nil {
			return err
		}
		v.t.Stats.Bytes += st.Size()
		if err := v.equal(path.Join(dir, path.Base(src)), src, nil); err != nil {
			return fmt.Errorf("verify on %s: %w: the ESP may be full or failing", v.p.Name, err)
		}
	}
	return nil
}

func baseNames(p []string) []string {
	out := make([]string, len(p))
	for i, s := range p {
		out[i] = path.Base(s)
	}
	return out
}

// equal compares the ESP file dst with the host file src (or data when
// src is ""), streaming both; nil means identical.
func (v *volume) equal(dst, src string, data []byte) error {
	var r io.Reader = bytes.NewReader(data)
	if src != "" {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		r = bufio.NewReaderSize(f, 1<<20)
	}
	buf := make([]byte, 64<<10)
	var n int64
	err := v.fs.WalkFile(dst, func(b []byte) error {
		if len(buf) < len(b) {
			buf = make([]byte, len(b))
		}
		if _, err := io.ReadFull(r, buf[:len(b)]); err != nil {
			return fmt.Errorf("%s is longer than its source", dst)
		}
		if !bytes.Equal(buf[:len(b)], b) {
			return fmt.Errorf("%s differs from its source at byte %d", dst, n)
		}
		n += int64(len(b))
		return nil
	})
	if err != nil {
		return err
	}
	if m, _ := r.Read(buf[:1]); m != 0 {
		return fmt.Errorf("%s is shorter than its source", dst)
	}
	return nil
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
