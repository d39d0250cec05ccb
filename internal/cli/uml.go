package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/guest/uml"
)

func (e *env) umlCmd() *cobra.Command {
	c := &cobra.Command{Use: "uml", Short: "User Mode Linux guests: create, start, shutdown (mconsole), console, sysrq, commit COW files"}
	c.AddCommand(e.umlCreate(), e.kindList(wire.GuestUML), e.umlStatus(), e.guestConfig(), e.rawConsole(wire.GuestUML), e.umlSysrq(), e.umlCommit())
	for _, a := range []string{"start", "shutdown", "stop"} {
		c.AddCommand(e.guestAction(a))
	}
	for _, a := range []string{"reboot", "suspend", "resume"} {
		c.AddCommand(e.powerAction(wire.GuestUML, a))
	}
	c.AddCommand(e.kindDestroy())
	return c
}

// umlHelperCmd is the hidden console relay mode the UML driver starts
// berth in; it outlives the daemon.
func (e *env) umlHelperCmd() *cobra.Command {
	return &cobra.Command{
		Use: uml.RelayCommand, Hidden: true, DisableFlagParsing: true,
		Run: func(c *cobra.Command, args []string) { os.Exit(uml.RelayMain(args, e.stderr)) },
	}
}

func (e *env) umlCreate() *cobra.Command {
	var g wire.Guest
	var startup, console, serial, appendArgs, kernel string
	var memory int
	var disks, nets, sets []string
	var bg bool
	c := &cobra.Command{
		Use:   "create ID --disk image=NAME|PATH[,cow]",
		Short: "Create a UML guest (a Linux kernel run as a host process; no KVM needed)",
		Long: `Create a User Mode Linux guest. Disks are ubd devices: --disk image=NAME boots
the ext4 root image of an image from berth's image store (berth image disk
NAME --format ext4) through a per-guest COW file; --disk /path/root.ext4,cow
shares any read-only base among guests the same way (keep the base
untouched: a changed base invalidates every COW file on it).
--net tuntap,bridge=BR | mcast[,GROUP[:PORT]] | daemon[,SOCKET] adds ethN.
--console fd (default: berth's relay, 'berth uml console ID' attaches),
pty, pts, port:N, null or none; --serial sets the serial lines (ssl=).`,
		Args: exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.Atoi(args[0])
			if err != nil {
				return usageError{fmt.Errorf("guest ID %q is not a number", args[0])}
			}
			g.ID, g.Kind = id, wire.GuestUML
			if g.Config, err = parseSets(sets); err != nil {
				return err
			}
			if g.Config == nil {
				g.Config = map[string]string{}
			}
			if c.Flags().Changed("memory") {
				g.Config["memory"] = strconv.Itoa(memory)
			}
			for i, d := range disks {
				g.Config[fmt.Sprintf("disk%d", i)] = d
			}
			for i, n := range nets {
				g.Config[fmt.Sprintf("net%d", i)] = n
			}
			for k, v := range map[string]string{"console": console, "serial": serial, "append": appendArgs, "kernel": kernel} {
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
	f.IntVar(&memory, "memory", 128, "RAM in MiB")
	f.StringArrayVar(&disks, "disk", nil, "image=NAME[,ro] | PATH[,cow][,ro] (repeatable: ubd0, ubd1, …)")
	f.StringArrayVar(&nets, "net", nil, "tuntap,bridge=BR[,macaddr=MAC] | mcast[,GROUP[:PORT]] | daemon[,SOCKET] (repeatable)")
	f.StringVar(&console, "console", "", "main console: fd (default), pty, pts, port:N, null or none")
	f.StringVar(&serial, "serial", "", "serial lines: pty, pts, port:N, null (default) or none")
	f.StringVar(&appendArgs, "append", "", "extra kernel arguments")
	f.StringVar(&kernel, "kernel", "", "UML kernel (default /usr/bin/linux)")
	f.StringVar(&g.Name, "name", "", "guest name (a DNS name)")
	f.BoolVar(&g.OnBoot, "onboot", false, "start the guest when the host boots")
	f.StringVar(&startup, "startup", "", "order=N,up=S,down=S")
	f.StringArrayVar(&sets, "set", nil, "other option KEY=VALUE (repeatable)")
	asyncFlags(c, &bg)
	return c
}

func (e *env) umlStatus() *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "Show a UML guest's state, host user, kernel version (mconsole), CPU and memory use",
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			var s wire.UMLStatus
			if err := e.do(c.Context(), "GET", "/api/v1/umls/"+args[0]+"/status", nil, &s); err != nil {
				return err
			}
			return e.show(s, func(w io.Writer) {
				kv(w, "status", s.Status, "pid", s.PID, "user", dash(s.User), "kernel", dash(s.Kernel),
					"cpu", fmt.Sprintf("%.1fs", s.CPUSeconds), "memory", fmt.Sprintf("%d MiB resident, %d MiB configured", s.MemoryBytes>>20, s.MaxMemoryMiB),
					"uptime", time.Duration(s.UptimeSeconds)*time.Second, "mconsole", dash(s.Mconsole))
			})
		},
	}
}

func (e *env) umlSysrq() *cobra.Command {
	return &cobra.Command{
		Use:   "sysrq ID KEY",
		Short: "Send a magic SysRq key (e.g. m: memory, t: tasks, s: sync) through mconsole",
		Args:  exactArgs(2, "a guest ID and a key"),
		RunE: func(c *cobra.Command, args []string) error {
			var r wire.UMLSysrqResponse
			if err := e.do(c.Context(), "POST", "/api/v1/umls/"+args[0]+"/sysrq", wire.UMLSysrqRequest{Key: args[1]}, &r); err != nil {
				return err
			}
			return e.show(r, func(w io.Writer) { io.WriteString(w, r.Output) })
		},
	}
}

func (e *env) umlCommit() *cobra.Command {
	var disk string
	var bg bool
	c := &cobra.Command{
		Use:   "commit ID NEWIMAGE",
		Short: "Merge a stopped guest's COW file with its base into a new image (uml_moo); the base is untouched",
		Args:  exactArgs(2, "a guest ID and the new image's path"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/umls/"+args[0]+"/commit", wire.UMLCommitRequest{Disk: disk, Image: args[1]}, bg)
		},
	}
	c.Flags().StringVar(&disk, "disk", "disk0", "the COW disk to commit")
	asyncFlags(c, &bg)
	return c
}
