package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
)

func (e *env) vmCmd() *cobra.Command {
	c := &cobra.Command{Use: "vm", Short: "QEMU virtual machines: create, start, shutdown, console, snapshots (KVM, or TCG without /dev/kvm)"}
	c.AddCommand(e.vmCreate(), e.kindList(wire.GuestVM), e.vmStatus(), e.guestConfig(), e.rawConsole(wire.GuestVM), e.vmSnapshot())
	for _, a := range []string{"start", "shutdown", "stop"} {
		c.AddCommand(e.guestAction(a))
	}
	for _, a := range []string{"reboot", "suspend", "resume"} {
		c.AddCommand(e.powerAction(wire.GuestVM, a))
	}
	c.AddCommand(e.kindDestroy())
	return c
}

// kindDestroy is "destroy ID" for VM and UML guests.
func (e *env) kindDestroy() *cobra.Command {
	var bg bool
	destroy := &cobra.Command{
		Use:   "destroy ID",
		Short: "Destroy a stopped guest: the disks and COW files berth made, and its configuration (images given by path stay)",
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "DELETE", "/api/v1/guests/"+args[0], nil, bg)
		},
	}
	asyncFlags(destroy, &bg)
	return destroy
}

func (e *env) vmCreate() *cobra.Command {
	var g wire.Guest
	var startup, cdrom, boot, bios, kernel, initrd, appendArgs string
	var memory, cores int
	var disks, nets, sets []string
	var bg bool
	c := &cobra.Command{
		Use:   "create ID",
		Short: "Create a VM: disks are made (qemu-img) in a task; nothing runs until start",
		Long: `Create a QEMU VM. Disks: --disk size=8G makes a new qcow2 image,
--disk image=NAME[,size=20G] makes a qcow2 overlay on the bootable disk of an
image from berth's image store (berth image disk NAME --format qcow2; the
image cannot be removed while the VM exists), --disk backing=/path/base.raw
makes a qcow2 overlay on a read-only base (snapshots work on both), --disk
file=/path/img uses an image as it is.
NICs are taps in an existing bridge: --net bridge=vmbr0[,model=virtio-net|e1000][,macaddr=MAC]
(without macaddr a stable address is derived from the ID). --kernel/--initrd/--append
boot a kernel directly; --boot order=net PXE-boots from the network.`,
		Args: exactArgs(1, "a VM ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.Atoi(args[0])
			if err != nil {
				return usageError{fmt.Errorf("VM ID %q is not a number", args[0])}
			}
			g.ID, g.Kind = id, wire.GuestVM
			if g.Config, err = parseSets(sets); err != nil {
				return err
			}
			if g.Config == nil {
				g.Config = map[string]string{}
			}
			f := c.Flags()
			if f.Changed("memory") {
				g.Config["memory"] = strconv.Itoa(memory)
			}
			if f.Changed("cores") {
				g.Config["cores"] = strconv.Itoa(cores)
			}
			for i, d := range disks {
				g.Config[fmt.Sprintf("disk%d", i)] = d
			}
			for i, n := range nets {
				g.Config[fmt.Sprintf("net%d", i)] = n
			}
			for k, v := range map[string]string{"cdrom": cdrom, "boot": boot, "bios": bios, "kernel": kernel, "initrd": initrd, "append": appendArgs} {
				if v != "" {
					g.Config[k] = v
				}
			}
			if startup != "" {
				if g.Startup, err = guest.ParseStartup(startup); err != nil {
					return usageError{fmt.Errorf("--startup: %w", err)}
				}
			}
			return e.runTask(c.Context(), "POST", "/api/v1/guests", g, bg)
		},
	}
	f := c.Flags()
	f.IntVar(&memory, "memory", 512, "RAM in MiB")
	f.IntVar(&cores, "cores", 1, "virtual CPUs")
	f.StringArrayVar(&disks, "disk", nil, "size=8G | image=NAME[,size=…] | backing=PATH[,size=…] | file=PATH[,format=raw|qcow2] (repeatable: disk0, disk1, …)")
	f.StringVar(&cdrom, "cdrom", "", "ISO image to attach as a CD-ROM")
	f.StringArrayVar(&nets, "net", nil, "bridge=BR[,model=virtio-net|e1000][,macaddr=MAC] (repeatable)")
	f.StringVar(&boot, "boot", "", "boot order, e.g. order=disk,net,cdrom")
	f.StringVar(&bios, "bios", "", "seabios (default) or ovmf (UEFI)")
	f.StringVar(&kernel, "kernel", "", "kernel to boot directly")
	f.StringVar(&initrd, "initrd", "", "initrd for --kernel")
	f.StringVar(&appendArgs, "append", "", "kernel command line for --kernel")
	f.StringVar(&g.Name, "name", "", "VM name (a DNS name)")
	f.BoolVar(&g.OnBoot, "onboot", false, "start the VM when the host boots")
	f.StringVar(&startup, "startup", "", "order=N,up=S,down=S")
	f.StringArrayVar(&sets, "set", nil, "other option KEY=VALUE (repeatable)")
	asyncFlags(c, &bg)
	return c
}

// kindList lists the guests of one kind.
func (e *env) kindList(kind wire.GuestKind) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List " + string(kind) + " guests with run state",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var all, gs []wire.Guest
			if err := e.do(c.Context(), "GET", "/api/v1/guests", nil, &all); err != nil {
				return err
			}
			for _, g := range all {
				if g.Kind == kind {
					gs = append(gs, g)
				}
			}
			if gs == nil {
				gs = []wire.Guest{}
			}
			return e.show(gs, func(w io.Writer) {
				row(w, "ID", "NAME", "STATUS", "MEMORY", "ONBOOT")
				for _, g := range gs {
					row(w, g.ID, dash(g.Name), g.Status, dash(g.Config["memory"]), g.OnBoot)
				}
			})
		},
	}
}

func (e *env) vmStatus() *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "Show a VM's state from QMP: running/paused/stopped, KVM or TCG, CPU and memory use",
		Args:  exactArgs(1, "a VM ID"),
		RunE: func(c *cobra.Command, args []string) error {
			var s wire.VMStatus
			if err := e.do(c.Context(), "GET", "/api/v1/vms/"+args[0]+"/status", nil, &s); err != nil {
				return err
			}
			return e.show(s, func(w io.Writer) {
				kv(w, "status", s.Status, "qmpstatus", dash(s.QMPStatus), "accelerator", dash(s.Accelerator), "pid", s.PID,
					"cpu", fmt.Sprintf("%.1fs", s.CPUSeconds), "memory", fmt.Sprintf("%d MiB used of %d MiB", s.MemoryBytes>>20, s.MaxMemoryMiB),
					"uptime", time.Duration(s.UptimeSeconds)*time.Second, "vnc", dash(s.VNC), "serial", dash(s.Serial))
			})
		},
	}
}

// powerAction is reboot, suspend or resume of a VM or UML guest.
func (e *env) powerAction(kind wire.GuestKind, action string) *cobra.Command {
	var bg bool
	seg := map[wire.GuestKind]string{wire.GuestVM: "vms", wire.GuestUML: "umls"}[kind]
	short := map[string]string{"reboot": "Reboot a running guest", "suspend": "Pause a running guest (its memory stays allocated)", "resume": "Continue a paused guest"}[action]
	c := &cobra.Command{
		Use:   action + " ID",
		Short: short,
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/"+seg+"/"+args[0]+"/"+action, nil, bg)
		},
	}
	asyncFlags(c, &bg)
	return c
}

func (e *env) vmSnapshot() *cobra.Command {
	c := &cobra.Command{Use: "snapshot", Short: "Snapshots of a VM's qcow2 disks: create, list, rollback, delete"}
	list := &cobra.Command{
		Use:   "list ID",
		Short: "List a VM's snapshots",
		Args:  exactArgs(1, "a VM ID"),
		RunE: func(c *cobra.Command, args []string) error {
			var ss []wire.VMSnapshot
			if err := e.do(c.Context(), "GET", "/api/v1/vms/"+args[0]+"/snapshots", nil, &ss); err != nil {
				return err
			}
			return e.show(ss, func(w io.Writer) {
				row(w, "NAME", "DATE", "DISKS")
				for _, s := range ss {
					row(w, s.Name, ts(s.Date), strings.Join(s.Disks, ","))
				}
			})
		},
	}
	var bg bool
	create := &cobra.Command{
		Use:   "create ID NAME",
		Short: "Snapshot every qcow2 disk (with RAM when the VM runs)",
		Args:  exactArgs(2, "a VM ID and a snapshot name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/vms/"+args[0]+"/snapshots", wire.VMSnapshotRequest{Name: args[1]}, bg)
		},
	}
	rollback := &cobra.Command{
		Use:   "rollback ID NAME",
		Short: "Return the disks (and RAM, if saved) to a snapshot",
		Args:  exactArgs(2, "a VM ID and a snapshot name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/vms/"+args[0]+"/snapshots/"+args[1]+"/rollback", nil, bg)
		},
	}
	del := &cobra.Command{
		Use:   "delete ID NAME",
		Short: "Delete a snapshot",
		Args:  exactArgs(2, "a VM ID and a snapshot name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "DELETE", "/api/v1/vms/"+args[0]+"/snapshots/"+args[1], nil, bg)
		},
	}
	for _, x := range []*cobra.Command{create, rollback, del} {
		asyncFlags(x, &bg)
	}
	c.AddCommand(list, create, rollback, del)
	return c
}

// rawConsole attaches to a VM's serial console or a UML guest's main
// console. With --expect it waits for a string in the output and exits,
// for scripts.
func (e *env) rawConsole(kind wire.GuestKind) *cobra.Command {
	var expect, send string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "console ID",
		Short: "Attach to the guest's console (detach: Ctrl-a q); --expect STRING waits for output and exits",
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.Atoi(args[0])
			if err != nil {
				return usageError{fmt.Errorf("guest ID %q is not a number", args[0])}
			}
			if send != "" && expect == "" {
				return usageError{fmt.Errorf("--send needs --expect")}
			}
			cl, err := e.client(c.Context())
			if err != nil {
				return err
			}
			ctx := c.Context()
			if expect != "" {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			conn, err := cl.GuestConsole(ctx, kind, id)
			if err != nil {
				return err
			}
			defer conn.Close()
			context.AfterFunc(ctx, func() { conn.Close() })
			interactive := false
			if fd := int(os.Stdin.Fd()); expect == "" && term.IsTerminal(fd) {
				if st, err := term.MakeRaw(fd); err == nil {
					defer term.Restore(fd, st)
				}
				interactive = true
				fmt.Fprint(e.stderr, "Connected to the console of "+string(kind)+" "+args[0]+"; detach with Ctrl-a q\r\n")
			}
			var lastOutput atomic.Value
			lastOutput.Store(time.Now())
			if send != "" {
				line := strings.ReplaceAll(send, `\n`, "\n")
				go func() {
					t := time.NewTicker(500 * time.Millisecond)
					defer t.Stop()
					var sent time.Time
					for {
						select {
						case <-ctx.Done():
							return
						case <-t.C:
						}
						// Type only once the console has been quiet for
						// 2 seconds (a booting guest drops input), then
						// again every 5 seconds.
						if time.Since(lastOutput.Load().(time.Time)) < 2*time.Second || time.Since(sent) < 5*time.Second {
							continue
						}
						if _, err := io.WriteString(conn, line); err != nil {
							return
						}
						sent = time.Now()
					}
				}()
			} else {
				go func() {
					io.Copy(conn, &detachReader{r: c.InOrStdin()})
					if interactive {
						conn.Close()
					}
				}()
			}
			if expect == "" {
				io.Copy(e.stdout, conn)
				return nil
			}
			var seen bytes.Buffer
			buf := make([]byte, 4096)
			for {
				n, err := conn.Read(buf)
				if n > 0 {
					lastOutput.Store(time.Now())
				}
				e.stdout.Write(buf[:n])
				seen.Write(buf[:n])
				if bytes.Contains(seen.Bytes(), []byte(expect)) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("console closed before %q appeared: %w", expect, errOr(ctx.Err(), err))
				}
			}
		},
	}
	c.Flags().StringVar(&expect, "expect", "", "wait until the console prints this string, then detach (exit 1 on --timeout)")
	c.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long --expect waits")
	c.Flags().StringVar(&send, "send", "", `with --expect: type this (\n for Enter) once the console is quiet, again every 5 seconds until the expected output shows`)
	return c
}

func errOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
