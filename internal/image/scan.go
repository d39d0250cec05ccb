package image

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ScanResult describes a root file system.
type ScanResult struct {
	Size         int64
	Files        int64
	Digest       string
	Architecture string
	OSRelease    string
	Kernel       string
	Initrd       string
}

var elfArch = map[elf.Machine]string{
	elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64", elf.EM_386: "i386", elf.EM_ARM: "armhf",
	elf.EM_RISCV: "riscv64", elf.EM_PPC64: "ppc64el", elf.EM_S390: "s390x", elf.EM_MIPS: "mips64el",
}

// Scan walks root once and returns its size, entry count, content digest,
// the architecture of its first ELF program under bin/ or usr/bin/, its OS
// release name and its newest kernel. The digest covers, in path order,
// each entry's path, type, permission bits, owner, size, link target or
// device number and content; it ignores times, so the same tree imported
// twice has the same digest.
func Scan(root string) (ScanResult, error) {
	var r ScanResult
	h := sha256.New()
	buf := make([]byte, 1<<16)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		var uid, gid uint32
		var rdev uint64
		if st != nil {
			uid, gid, rdev = st.Uid, st.Gid, st.Rdev
		}
		r.Files++
		fmt.Fprintf(h, "%s\x00%s\x00%o\x00%d:%d\x00", rel, fi.Mode().Type(), fi.Mode().Perm()|fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), uid, gid)
		switch {
		case fi.Mode().IsRegular():
			r.Size += fi.Size()
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			fh := sha256.New()
			_, err = io.CopyBuffer(fh, f, buf)
			if err == nil && r.Architecture == "" && fi.Size() > 64 && (strings.HasPrefix(rel, "bin/") || strings.HasPrefix(rel, "usr/bin/")) {
				if ef, err := elf.NewFile(f); err == nil {
					r.Architecture = elfArch[ef.Machine]
				}
			}
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", rel, err)
			}
			fmt.Fprintf(h, "%d\x00%x", fi.Size(), fh.Sum(nil))
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s", t)
		case fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice) != 0:
			fmt.Fprintf(h, "%d", rdev)
		}
		h.Write([]byte{'\n'})
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("scan image root: %w", err)
	}
	r.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	r.OSRelease = osRelease(root)
	r.Kernel, r.Initrd = kernel(root)
	return r, nil
}

// osRelease reads PRETTY_NAME (or NAME) from the image's os-release,
// never following symlinks out of the root.
func osRelease(root string) string {
	for _, rel := range []string{"etc/os-release", "usr/lib/os-release"} {
		p := filepath.Join(root, rel)
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		name, pretty := ParseOSRelease(f)
		f.Close()
		if pretty != "" {
			return pretty
		}
		if name != "" {
			return name
		}
	}
	return ""
}

// ParseOSRelease returns NAME and PRETTY_NAME from an os-release(5) file.
func ParseOSRelease(r io.Reader) (name, pretty string) {
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		} else {
			v = strings.Trim(v, `"'`)
		}
		switch k {
		case "NAME":
			name = v
		case "PRETTY_NAME":
			pretty = v
		}
	}
	return name, pretty
}

// kernel finds the newest /boot/vmlinuz-VERSION and its initrd.
func kernel(root string) (string, string) {
	ents, err := os.ReadDir(filepath.Join(root, "boot"))
	if err != nil {
		return "", ""
	}
	var vers []string
	for _, e := range ents {
		if v, ok := strings.CutPrefix(e.Name(), "vmlinuz-"); ok && e.Type().IsRegular() {
			vers = append(vers, v)
		}
	}
	if len(vers) == 0 {
		return "", ""
	}
	sort.Strings(vers)
	v := vers[len(vers)-1]
	initrd := ""
	if fi, err := os.Lstat(filepath.Join(root, "boot", "initrd.img-"+v)); err == nil && fi.Mode().IsRegular() {
		initrd = "/boot/initrd.img-" + v
	}
	return "/boot/vmlinuz-" + v, initrd
}
