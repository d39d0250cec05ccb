package esp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berthhq/berth/internal/atomicfile"
)

// State files, relative to Tool.Root (the names proxmox-boot-tool uses, so
// a host can switch between the two tools).
const (
	UUIDsFile         = "etc/kernel/proxmox-boot-uuids"
	ManualKernelsFile = "etc/kernel/proxmox-boot-manual-kernels"
	PinFile           = "etc/kernel/proxmox-boot-pin"
	NextBootPinFile   = "etc/kernel/next-boot-pin"
	CmdlineFile       = "etc/kernel/cmdline"
	legacyUUIDsFile   = "etc/kernel/pve-efiboot-uuids"
	legacyManualFile  = "etc/kernel/pve-efiboot-manual-kernels"
)

// Tool is the ESP manager. The zero value is not usable; fill in at least
// Stdout and Stderr, or use New.
type Tool struct {
	// Root is the root of the managed system ("/" normally): /etc/kernel
	// and /boot are read and written under it.
	Root string
	// Sys, Dev and Proc are where sysfs, device nodes and procfs are.
	Sys, Dev, Proc string
	// SystemdBootDir holds systemd-bootx64.efi (under Root).
	SystemdBootDir string
	// Stdout gets progress, Stderr warnings, as proxmox-boot-tool prints them.
	Stdout, Stderr io.Writer
	Log            *slog.Logger
	// Title is the loader entry title.
	Title string
	// Hook, when set, is called before every change to an ESP with a
	// description of the step; an error aborts the operation there. Tests
	// use it to interrupt refresh at every point.
	Hook func(step string) error
	// Stats counts what the last operations wrote.
	Stats Stats
}

// Stats counts writes to ESPs.
type Stats struct {
	// Ops is the number of changes (file writes, renames, removals, mkdirs).
	Ops int
	// Bytes is the number of file bytes written.
	Bytes int64
}

// New returns a Tool for the system at root with the host's /sys, /dev and
// /proc.
func New(root string, stdout, stderr io.Writer, log *slog.Logger) *Tool {
	if root == "" {
		root = "/"
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Tool{Root: root, Sys: "/sys", Dev: "/dev", Proc: "/proc", SystemdBootDir: "usr/lib/systemd/boot/efi",
		Stdout: stdout, Stderr: stderr, Log: log, Title: "Proxmox Virtual Environment"}
}

func (t *Tool) path(rel string) string { return filepath.Join(t.Root, rel) }

func (t *Tool) outf(format string, a ...any) { fmt.Fprintf(t.Stdout, format+"\n", a...) }
func (t *Tool) warnf(format string, a ...any) {
	fmt.Fprintf(t.Stderr, format+"\n", a...)
}

// ErrNotConfigured means /etc/kernel/proxmox-boot-uuids does not exist.
var ErrNotConfigured = errors.New("/etc/kernel/proxmox-boot-uuids does not exist")

var uuidRe = regexp.MustCompile(`^[0-9a-fA-F]{4}-[0-9a-fA-F]{4}$`)

// readLines returns the non-empty, trimmed lines of a root-relative file.
// Unlike proxmox-boot-tool, a last line without a newline counts.
func (t *Tool) readLines(rel string) ([]string, error) {
	b, err := os.ReadFile(t.path(rel))
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

// firstLine returns the first line of a root-relative file and whether the
// file exists.
func (t *Tool) firstLine(rel string) (string, bool) {
	b, err := os.ReadFile(t.path(rel))
	if err != nil {
		return "", false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), true
}

// writeLines writes sorted, unique lines atomically.
func (t *Tool) writeLines(rel string, lines []string) error {
	lines = slices.Clone(lines)
	slices.Sort(lines)
	lines = slices.Compact(lines)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return WriteAtomic(t.path(rel), []byte(b.String()), 0o644)
}

// migrateLegacy renames the pve-efiboot-* files of old installations.
func (t *Tool) migrateLegacy() {
	for old, cur := range map[string]string{legacyUUIDsFile: UUIDsFile, legacyManualFile: ManualKernelsFile} {
		if _, err := os.Stat(t.path(cur)); err == nil {
			continue
		}
		if _, err := os.Stat(t.path(old)); err == nil {
			if err := os.Rename(t.path(old), t.path(cur)); err == nil {
				t.Log.Info("migrated legacy state file", "from", old, "to", cur)
			}
		}
	}
}

// UUIDs returns the ESP list; invalid lines are warned about and skipped.
func (t *Tool) UUIDs() ([]string, error) {
	t.migrateLegacy()
	lines, err := t.readLines(UUIDsFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotConfigured
	}
	if err != nil {
		return nil, fmt.Errorf("read ESP list: %w", err)
	}
	var out []string
	for _, l := range lines {
		if !uuidRe.MatchString(l) {
			t.warnf("WARN: %s read from /%s does not look like a VFAT-UUID - skipping", l, UUIDsFile)
			continue
		}
		out = append(out, strings.ToUpper(l))
	}
	return out, nil
}

// WriteAtomic writes data to path through a synced temporary file that is
// renamed into place, then syncs the directory, creating parents as needed.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, data, mode)
}

// lock takes an exclusive flock on /etc/kernel/.berth-boot.lock so that a
// refresh from a package hook and one from the daemon never write the
// same ESP at once. It waits up to the context's deadline.
func (t *Tool) lock(ctx context.Context) (func(), error) {
	p := t.path("etc/kernel/.berth-boot.lock")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("another berth boot operation holds %s: %w", p, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
