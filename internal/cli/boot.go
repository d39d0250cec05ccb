package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/esp"
)

// bootExit carries proxmox-boot-tool's exit code for a `berth boot` error.
type bootExit struct {
	error
	code int
}

func (b bootExit) ExitCode() int { return b.code }

// bootCmd is the ESP tool. Unlike every other command it does not talk to
// the daemon: kernel and initramfs hooks run it during package upgrades,
// when no daemon may be running, so it calls package esp directly.
func (e *env) bootCmd() *cobra.Command {
	var root, sysfs, devfs, procfs string
	c := &cobra.Command{
		Use:   "boot",
		Short: "Keep the EFI system partitions bootable (a drop-in for proxmox-boot-tool; works without the daemon)",
		Long: `berth boot keeps every EFI system partition (ESP) listed in
/etc/kernel/proxmox-boot-uuids bootable: it formats and initialises ESPs with
systemd-boot or GRUB, copies the selected kernels and writes loader entries or
grub.cfg, and handles kernel pins. It uses proxmox-boot-tool's state files, so
a host can switch between the two tools without re-initialising its ESPs.

It needs no daemon and no vfat driver: ESPs are found by reading GPT and FAT
boot sectors and written from userspace with mtools, never mounted.
--root makes /etc and /boot relative to another root (chroots, tests).`,
	}
	pf := c.PersistentFlags()
	pf.StringVar(&root, "root", "/", "root of the system whose /etc/kernel and /boot are managed")
	pf.StringVar(&sysfs, "sysfs", "/sys", "where sysfs is mounted")
	pf.StringVar(&devfs, "devfs", "/dev", "where device nodes are")
	pf.StringVar(&procfs, "procfs", "/proc", "where procfs is mounted")
	for _, h := range []string{"sysfs", "devfs", "procfs"} {
		_ = pf.MarkHidden(h)
	}
	tool := func() *esp.Tool {
		t := esp.New(root, e.stdout, e.stderr, slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		t.Sys, t.Dev, t.Proc = sysfs, devfs, procfs
		t.Hook = testKillHook()
		return t
	}
	wrap := func(err error) error {
		switch {
		case err == nil:
			return nil
		case errors.Is(err, esp.ErrNotConfigured):
			return bootExit{fmt.Errorf("E: %w", err), 2}
		}
		return bootExit{err, 1}
	}
	args := func(min, max int, names string) cobra.PositionalArgs {
		return func(c *cobra.Command, a []string) error {
			if len(a) < min || len(a) > max {
				return usageError{fmt.Errorf("%s takes %s (got %d argument(s))\nusage: %s", c.CommandPath(), names, len(a), c.UseLine())}
			}
			return nil
		}
	}

	var quiet, viaDaemon bool
	status := &cobra.Command{
		Use:   "status [--quiet]",
		Short: "Show the boot mode and, per ESP, its loader, kernels and whether it is in sync",
		Long: `Without --quiet: the running system's boot mode, Secure Boot and firmware
boot entries, and per ESP its mode (uefi = systemd-boot, or grub), the kernels
on it, and whether it is in sync; exit 1 if any ESP is missing, damaged or out
of sync. With --quiet: no output, exit 2 if /etc/kernel/proxmox-boot-uuids does
not exist, else 0 (what proxmox-boot-tool's grub hooks test).`,
		Args: args(0, 0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if viaDaemon {
				var st wire.BootStatus
				if err := e.do(c.Context(), "GET", "/api/v1/node/boot/status", nil, &st); err != nil {
					return err
				}
				return e.show(st, func(w io.Writer) {
					kv(w, "boot mode", st.BootMode, "secure boot", st.SecureBoot, "managed", st.Configured, "kernels", dash(strings.Join(st.Kernels, ", ")))
					row(w, "ESP", "DEVICE", "MODE", "IN SYNC", "VERSIONS", "ERROR")
					for _, x := range st.ESPs {
						row(w, x.UUID, dash(x.Device), dash(x.Mode), x.InSync, dash(strings.Join(x.Versions, ", ")), dash(x.Error))
					}
				})
			}
			t := tool()
			if quiet {
				_, err := t.UUIDs()
				if errors.Is(err, esp.ErrNotConfigured) {
					return bootExit{silent{}, 2}
				}
				return nil
			}
			r, err := t.Status()
			if err != nil {
				return wrap(err)
			}
			if e.output == "json" {
				return e.show(r.Wire(), nil)
			}
			if !r.Configured {
				return wrap(esp.ErrNotConfigured)
			}
			t.PrintStatus(r)
			if r.Firmware != nil {
				fmt.Fprintf(e.stdout, "Secure Boot: %v\n", r.SecureBoot)
				for _, be := range r.Firmware.Entries {
					mark := " "
					if be.Active {
						mark = "*"
					}
					fmt.Fprintf(e.stdout, "Boot%04X%s %s\t%s\n", be.Number, mark, be.Description, be.Path)
				}
			}
			if !r.Healthy() {
				return bootExit{errors.New("E: not every ESP is in sync (see above)"), 1}
			}
			return nil
		},
	}
	status.Flags().BoolVarP(&quiet, "quiet", "q", false, "no output; exit 2 if no ESP list exists")
	status.Flags().BoolVar(&viaDaemon, "daemon", false, "ask the daemon (local socket or --server) instead of reading the ESPs directly")

	var force bool
	format := &cobra.Command{
		Use:   "format PARTITION [--force]",
		Short: "Format a partition as a FAT32 ESP after safety checks (GPT type EF00, >= 256 MiB, unmounted, empty)",
		Args:  args(1, 1, "a PARTITION"),
		RunE: func(c *cobra.Command, a []string) error {
			return wrap(tool().Format(c.Context(), a[0], force))
		},
	}
	format.Flags().BoolVar(&force, "force", false, "format even if a check fails (wrong type, too small, mounted, holds a filesystem)")

	var iforce bool
	initc := &cobra.Command{
		Use:   "init PARTITION [grub|systemd-boot]",
		Short: "Install the boot loader on a formatted ESP, add it to the ESP list and refresh all ESPs",
		Long: `init installs systemd-boot (or GRUB with 'grub') on the ESP, adds its volume ID
to /etc/kernel/proxmox-boot-uuids and refreshes every listed ESP. Without a mode,
an ESP that has GRUB keeps it; otherwise UEFI-booted systems get systemd-boot and
BIOS-booted ones GRUB. 'systemd-boot' forces systemd-boot (for example to prepare
a disk for a UEFI machine from a BIOS host).`,
		Args: args(1, 2, "a PARTITION and an optional mode"),
		RunE: func(c *cobra.Command, a []string) error {
			mode := ""
			if len(a) == 2 {
				mode = a[1]
			}
			return wrap(tool().Init(c.Context(), a[0], mode, iforce, true))
		},
	}
	initc.Flags().BoolVar(&iforce, "force", false, "initialise even if a check fails")

	reinit := &cobra.Command{
		Use:   "reinit",
		Short: "Re-install the boot loader on every listed ESP, keeping each one's mode",
		Args:  args(0, 0, "no arguments"),
		RunE:  func(c *cobra.Command, _ []string) error { return wrap(tool().Reinit(c.Context())) },
	}
	var dry bool
	clean := &cobra.Command{
		Use:   "clean [--dry-run]",
		Short: "Remove ESPs that no longer exist from /etc/kernel/proxmox-boot-uuids",
		Args:  args(0, 0, "no arguments"),
		RunE:  func(c *cobra.Command, _ []string) error { return wrap(tool().Clean(dry)) },
	}
	clean.Flags().BoolVar(&dry, "dry-run", false, "only report, change nothing")

	var installing, hook string
	var refreshDaemon, bg bool
	refresh := &cobra.Command{
		Use:   "refresh",
		Short: "Copy the selected kernels to every listed ESP and update loader entries (crash-safe)",
		Long: `refresh copies the selected kernels (running, being installed, the two newest,
the newest of the previous series, manual and pinned ones) to every ESP, writes
their loader entries or grub.cfg and the pinned default, then removes stale
kernels. New files are written and verified before anything points at them, so
an interrupted refresh leaves every ESP bootable; unchanged files are not
rewritten. One failing ESP does not stop the others (exit 1).`,
		Args: args(0, 0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if refreshDaemon {
				return e.runTask(c.Context(), "POST", "/api/v1/node/boot/refresh", struct{}{}, bg)
			}
			switch hook {
			case "", "zz-proxmox-boot", "zz-berth-boot":
			case "proxmox-auto-removal":
				fmt.Fprintln(e.stdout, "Hook 'proxmox-auto-removal' is not part of berth (apt's own kernel autoremoval applies), skipping.")
				return nil
			default:
				return bootExit{fmt.Errorf("E: '%s' is not a valid hook script name.", hook), 1}
			}
			fmt.Fprintln(e.stdout, "Running hook script 'zz-berth-boot'..")
			return wrap(tool().Refresh(c.Context(), installing))
		},
	}
	refresh.Flags().StringVar(&installing, "installing", "", "kernel version being installed (kernel hooks pass it)")
	refresh.Flags().BoolVar(&refreshDaemon, "daemon", false, "run the refresh as a task of the daemon (local socket or --server)")
	asyncFlags(refresh, &bg)
	refresh.Flags().StringVar(&hook, "hook", "", "proxmox-boot-tool compatibility: run only this hook (zz-proxmox-boot or proxmox-auto-removal)")

	var bin string
	hooks := &cobra.Command{
		Use:   "install-hooks",
		Short: "Install kernel and initramfs hooks and the unit that clears the next-boot pin",
		Long: `install-hooks writes /etc/kernel/postinst.d/zz-berth-boot and postrm.d/zz-berth-boot
(refresh after a kernel is installed or removed), /etc/initramfs/post-update.d/berth-boot
(refresh after update-initramfs run by hand) and berth-boot-cleanup.service, which at
boot clears the next-boot pin and refreshes, so 'kernel pin --next-boot' applies once.`,
		Args: args(0, 0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				bin = exe
			}
			return wrap(tool().InstallHooks(bin))
		},
	}
	hooks.Flags().StringVar(&bin, "berth", "", "absolute path of the berth binary the hooks run (default: this binary)")

	kernel := &cobra.Command{Use: "kernel", Aliases: []string{"kernels"}, Short: "Manage the manual kernel list and kernel pins"}
	kadd := &cobra.Command{Use: "add VERSION", Short: "Keep a kernel on the ESPs (it must be in /boot)", Args: args(1, 1, "a kernel VERSION"),
		RunE: func(c *cobra.Command, a []string) error { return wrap(tool().KernelAdd(a[0])) }}
	krm := &cobra.Command{Use: "remove VERSION", Short: "Remove a kernel from the manual list", Args: args(1, 1, "a kernel VERSION"),
		RunE: func(c *cobra.Command, a []string) error { return wrap(tool().KernelRemove(a[0])) }}
	klist := &cobra.Command{Use: "list", Short: "List manual, automatically selected and pinned kernels", Args: args(0, 0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			t := tool()
			if e.output == "json" {
				pin, next, _ := t.Pins()
				return e.show(wire.BootKernels{Manual: nonNil(t.Manual()), Selected: nonNil(t.Kernels("")), Pin: pin, NextBootPin: next}, nil)
			}
			t.KernelList()
			return nil
		}}
	var next bool
	kpin := &cobra.Command{Use: "pin VERSION [--next-boot]", Short: "Boot this kernel by default (or only at the next boot); applied by refresh", Args: args(1, 1, "a kernel VERSION"),
		RunE: func(c *cobra.Command, a []string) error { return wrap(tool().KernelPin(a[0], next)) }}
	kpin.Flags().BoolVar(&next, "next-boot", false, "pin only for the next boot")
	var unext bool
	kunpin := &cobra.Command{Use: "unpin [--next-boot]", Short: "Remove the pins (with --next-boot only the next-boot pin)", Args: args(0, 0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error { return wrap(tool().KernelUnpin(unext)) }}
	kunpin.Flags().BoolVar(&unext, "next-boot", false, "remove only the next-boot pin")
	kernel.AddCommand(kadd, krm, klist, kpin, kunpin)

	c.AddCommand(status, format, initc, reinit, clean, refresh, kernel, hooks)
	return c
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// silent is an error that prints nothing (status --quiet).
type silent struct{}

func (silent) Error() string { return "" }

// testKillHook returns a hook that SIGKILLs this process before the N-th
// change to an ESP when BERTH_BOOT_TEST_KILL_AT=N is set. It exists only
// for the crash-safety tests, which need a real kill at every step.
func testKillHook() func(string) error {
	n, err := strconv.Atoi(os.Getenv("BERTH_BOOT_TEST_KILL_AT"))
	if err != nil || n <= 0 {
		return nil
	}
	step := 0
	return func(desc string) error {
		step++
		if step == n {
			fmt.Fprintf(os.Stderr, "test: killed before step %d (%s)\n", n, desc)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
		return nil
	}
}

// espSummary is node status's one-line view of the ESPs.
func espSummary(b *wire.BootStatus) string {
	if b == nil {
		return "not managed (no /etc/kernel/proxmox-boot-uuids)"
	}
	ok := 0
	var bad []string
	for _, e := range b.ESPs {
		if e.InSync {
			ok++
		} else {
			bad = append(bad, e.UUID)
		}
	}
	s := fmt.Sprintf("%d of %d in sync", ok, len(b.ESPs))
	if len(bad) > 0 {
		s += " (check " + strings.Join(bad, ", ") + " with 'berth boot status')"
	}
	return s
}
