package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
	"github.com/berthhq/berth/internal/guest"
)

// exitStatus is an error that only carries the exit code of a command run
// in a guest: Main exits with it and prints nothing (empty message).
type exitStatus int

func (e exitStatus) Error() string { return "" }

// ExitCode is the command's exit code.
func (e exitStatus) ExitCode() int { return int(e) }

func (e *env) ctCmd() *cobra.Command {
	c := &cobra.Command{Use: "ct", Short: "System containers: create, start, stop, exec, console, snapshots, clone"}
	c.AddCommand(e.ctCreate(), e.ctList(), e.ctStatus(), e.guestConfig(), e.ctExec(), e.ctEnter(), e.ctConsole(), e.ctSnapshot(), e.ctClone())
	for _, a := range []string{"start", "shutdown", "stop"} {
		c.AddCommand(e.guestAction(a))
	}
	for _, a := range []string{"reboot", "suspend", "resume"} {
		c.AddCommand(e.ctAction(a))
	}
	var bg bool
	destroy := &cobra.Command{
		Use:   "destroy ID",
		Short: "Destroy a stopped container: its writable layer, snapshots and configuration (the image stays)",
		Args:  exactArgs(1, "a container ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "DELETE", "/api/v1/guests/"+args[0], nil, bg)
		},
	}
	asyncFlags(destroy, &bg)
	c.AddCommand(destroy)
	return c
}

func (e *env) ctCreate() *cobra.Command {
	var g wire.Guest
	var startup string
	var nets, sets []string
	var privileged, bg bool
	opts := map[string]*string{}
	c := &cobra.Command{
		Use:   "create ID --image NAME",
		Short: "Create a container from an image (unprivileged unless --privileged)",
		Long: `Create a container. Its root is an overlay of the image (shared, read-only)
and a writable layer of its own; root in the container is an unprivileged
subordinate id range on the host unless --privileged is given.

--net takes name=eth0,bridge=BR,ip=dhcp|CIDR,gw=IP,hwaddr=MAC and may be
repeated (net0, net1, …); the MAC defaults to one derived from the ID.`,
		Args: exactArgs(1, "a container ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.Atoi(args[0])
			if err != nil {
				return usageError{fmt.Errorf("container ID %q is not a number (use 100-999999999)", args[0])}
			}
			g.ID, g.Kind = id, wire.GuestContainer
			if startup != "" {
				if g.Startup, err = guest.ParseStartup(startup); err != nil {
					return usageError{fmt.Errorf("--startup: %w", err)}
				}
			}
			if g.Config, err = parseSets(sets); err != nil {
				return err
			}
			if g.Config == nil {
				g.Config = map[string]string{}
			}
			for k, v := range opts {
				if c.Flags().Changed(k) {
					g.Config[k] = *v
				}
			}
			if privileged {
				g.Config["privileged"] = "1"
			}
			for i, n := range nets {
				g.Config["net"+strconv.Itoa(i)] = n
			}
			return e.runTask(c.Context(), "POST", "/api/v1/guests", g, bg)
		},
	}
	f := c.Flags()
	for _, o := range []struct{ name, help string }{
		{"image", "image to create the container from (berth image list)"},
		{"hostname", "host name inside the container (default: --name or ctID)"},
		{"memory", "memory limit in MiB (OOM kills stay inside the container)"},
		{"swap", "swap allowed on top of --memory, in MiB"},
		{"cores", "number of CPUs the container may run on"},
		{"cpulimit", "CPU time limit in CPUs, e.g. 0.5 (0: unlimited)"},
		{"cpuunits", "CPU weight 1-10000 (default 100)"},
		{"pids", "maximum number of processes (fork-bomb guard)"},
		{"init", "init command inside the container (default /sbin/init)"},
	} {
		opts[o.name] = new(string)
		f.StringVar(opts[o.name], o.name, "", o.help)
	}
	f.StringVar(&g.Name, "name", "", "guest name (a DNS name)")
	f.StringArrayVar(&nets, "net", nil, "NIC: name=eth0,bridge=BR,ip=dhcp|CIDR,gw=IP,hwaddr=MAC (repeatable: net0, net1, …)")
	f.BoolVar(&privileged, "privileged", false, "run without a user namespace (root in the container is root on the host)")
	f.BoolVar(&g.OnBoot, "onboot", false, "start the container when the host boots")
	f.StringVar(&startup, "startup", "", "order=N,up=S,down=S")
	f.StringArrayVar(&sets, "set", nil, "other option KEY=VALUE (repeatable)")
	asyncFlags(c, &bg)
	return c
}

func (e *env) ctList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List containers with run state and startup settings",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var all, gs []wire.Guest
			if err := e.do(c.Context(), "GET", "/api/v1/guests", nil, &all); err != nil {
				return err
			}
			gs = []wire.Guest{}
			for _, g := range all {
				if g.Kind == wire.GuestContainer {
					gs = append(gs, g)
				}
			}
			return e.show(gs, func(w io.Writer) {
				row(w, "ID", "NAME", "STATUS", "IMAGE", "ONBOOT", "STARTUP")
				for _, g := range gs {
					row(w, g.ID, dash(g.Name), g.Status, dash(g.Config["image"]), g.OnBoot, dash(guest.FormatStartup(g.Startup)))
				}
			})
		},
	}
}

func (e *env) ctStatus() *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "Show a container's run state, init PID, uptime, memory and process count",
		Args:  exactArgs(1, "a container ID"),
		RunE: func(c *cobra.Command, args []string) error {
			var s wire.ContainerStatus
			if err := e.do(c.Context(), "GET", "/api/v1/containers/"+args[0]+"/status", nil, &s); err != nil {
				return err
			}
			return e.show(s, func(w io.Writer) {
				kv(w, "status", s.Status)
				if s.PID != 0 {
					kv(w, "pid", s.PID, "uptime", fmt.Sprintf("%ds", s.Uptime), "memory", humanSize(s.Memory), "processes", s.Processes, "cgroup", s.Cgroup)
				}
			})
		},
	}
}

func (e *env) ctAction(action string) *cobra.Command {
	var bg bool
	var timeout int
	short := map[string]string{"reboot": "Reboot a container (clean shutdown, then start)", "suspend": "Freeze every process of a container", "resume": "Thaw a suspended container"}[action]
	c := &cobra.Command{
		Use:   action + " ID",
		Short: short,
		Args:  exactArgs(1, "a container ID"),
		RunE: func(c *cobra.Command, args []string) error {
			path := "/api/v1/containers/" + args[0] + "/status/" + action
			if timeout > 0 {
				path += "?timeout=" + strconv.Itoa(timeout)
			}
			return e.runTask(c.Context(), "POST", path, nil, bg)
		},
	}
	if action == "reboot" {
		c.Flags().IntVar(&timeout, "timeout", 0, "seconds of clean shutdown before a hard stop")
	}
	asyncFlags(c, &bg)
	return c
}

func ctID(s string) (int, error) {
	id, err := strconv.Atoi(s)
	if err != nil {
		return 0, usageError{fmt.Errorf("container ID %q is not a number", s)}
	}
	return id, nil
}

func (e *env) ctExec() *cobra.Command {
	var tty bool
	var envs []string
	c := &cobra.Command{
		Use:   "exec ID -- COMMAND [ARG...]",
		Short: "Run a command in a running container; stdin, stdout and stderr are streamed and its exit code is berth's",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageError{fmt.Errorf("exec needs a container ID and a command\nusage: %s", c.UseLine())}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			id, err := ctID(args[0])
			if err != nil {
				return err
			}
			return e.ctRun(c, id, wire.ContainerExecRequest{Argv: args[1:], TTY: tty, Env: envs})
		},
	}
	c.Flags().BoolVarP(&tty, "tty", "t", false, "run on a pseudo-terminal (interactive programs)")
	c.Flags().StringArrayVar(&envs, "env", nil, "VAR=VALUE for the command (repeatable)")
	return c
}

func (e *env) ctEnter() *cobra.Command {
	return &cobra.Command{
		Use:   "enter ID",
		Short: "Open a shell (/bin/sh) inside a running container",
		Args:  exactArgs(1, "a container ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := ctID(args[0])
			if err != nil {
				return err
			}
			return e.ctRun(c, id, wire.ContainerExecRequest{Argv: []string{"/bin/sh", "-l"}, TTY: term.IsTerminal(int(os.Stdin.Fd()))})
		},
	}
}

// ctRun runs req and turns a non-zero exit code into berth's.
func (e *env) ctRun(c *cobra.Command, id int, req wire.ContainerExecRequest) error {
	cl, err := e.client(c.Context())
	if err != nil {
		return err
	}
	stdin := io.Reader(c.InOrStdin())
	if req.TTY {
		if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
			if st, err := term.MakeRaw(fd); err == nil {
				defer term.Restore(fd, st)
			}
		}
	}
	code, err := cl.ContainerExec(c.Context(), id, req, client.ExecIO{Stdin: stdin, Stdout: e.stdout, Stderr: e.stderr})
	if err != nil {
		return err
	}
	if code != 0 {
		return exitStatus(code)
	}
	return nil
}

// DetachKeys end `berth ct console` without touching the container:
// Ctrl-a, then q (as lxc-console).
var DetachKeys = []byte{0x01, 'q'}

func (e *env) ctConsole() *cobra.Command {
	var showLog bool
	c := &cobra.Command{
		Use:   "console ID",
		Short: "Attach to a console shell in a running container (detach: Ctrl-a q); --log shows init's console output",
		Long: `Attach to a login shell on a new pseudo-terminal inside the container.
Press Ctrl-a then q to detach; the container keeps running. berth keeps
no console process per container (it would cost memory in every idle
container); init's own console output goes to a log that --log prints.`,
		Args: exactArgs(1, "a container ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := ctID(args[0])
			if err != nil {
				return err
			}
			if showLog {
				var l wire.ContainerConsoleLog
				if err := e.do(c.Context(), "GET", "/api/v1/containers/"+args[0]+"/console-log", nil, &l); err != nil {
					return err
				}
				if e.output == "json" {
					return e.show(l, nil)
				}
				_, err := io.WriteString(e.stdout, l.Log)
				return err
			}
			cl, err := e.client(c.Context())
			if err != nil {
				return err
			}
			if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
				if st, err := term.MakeRaw(fd); err == nil {
					defer term.Restore(fd, st)
				}
				fmt.Fprint(e.stderr, "Connected to the console of container "+args[0]+"; detach with Ctrl-a q\r\n")
			}
			return cl.ContainerConsole(c.Context(), id, client.ExecIO{Stdin: &detachReader{r: c.InOrStdin()}, Stdout: e.stdout})
		},
	}
	c.Flags().BoolVar(&showLog, "log", false, "print init's recent console output instead of attaching")
	return c
}

// detachReader passes input through until DetachKeys, where it ends.
type detachReader struct {
	r       io.Reader
	pending bool
	done    bool
}

func (d *detachReader) Read(p []byte) (int, error) {
	if d.done {
		return 0, io.EOF
	}
	n, err := d.r.Read(p)
	out := p[:0]
	for _, b := range p[:n] {
		switch {
		case d.pending && b == DetachKeys[1]:
			d.done = true
			return len(out), nil
		case d.pending:
			out = append(out, DetachKeys[0], b)
			d.pending = false
		case b == DetachKeys[0]:
			d.pending = true
		default:
			out = append(out, b)
		}
	}
	return len(out), err
}

func (e *env) ctSnapshot() *cobra.Command {
	c := &cobra.Command{Use: "snapshot", Short: "Snapshots of a container's writable layer: create, list, rollback, delete"}
	var desc string
	var bg bool
	create := &cobra.Command{
		Use:   "create ID NAME",
		Short: "Snapshot the writable layer (a running container is frozen during the copy)",
		Args:  exactArgs(2, "a container ID and a snapshot name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/containers/"+args[0]+"/snapshots", wire.ContainerSnapshotRequest{Name: args[1], Description: desc}, bg)
		},
	}
	create.Flags().StringVar(&desc, "description", "", "what the snapshot is for")
	asyncFlags(create, &bg)
	list := &cobra.Command{
		Use:   "list ID",
		Short: "List a container's snapshots",
		Args:  exactArgs(1, "a container ID"),
		RunE: func(c *cobra.Command, args []string) error {
			var ss []wire.ContainerSnapshot
			if err := e.do(c.Context(), "GET", "/api/v1/containers/"+args[0]+"/snapshots", nil, &ss); err != nil {
				return err
			}
			return e.show(ss, func(w io.Writer) {
				row(w, "NAME", "CREATED", "DESCRIPTION")
				for _, s := range ss {
					row(w, s.Name, ts(s.Created), dash(s.Description))
				}
			})
		},
	}
	var bg2, bg3 bool
	rollback := &cobra.Command{
		Use:   "rollback ID NAME",
		Short: "Replace a stopped container's writable layer with a snapshot's",
		Args:  exactArgs(2, "a container ID and a snapshot name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/containers/"+args[0]+"/snapshots/"+args[1]+"/rollback", nil, bg2)
		},
	}
	asyncFlags(rollback, &bg2)
	del := &cobra.Command{
		Use:   "delete ID NAME",
		Short: "Delete a snapshot",
		Args:  exactArgs(2, "a container ID and a snapshot name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "DELETE", "/api/v1/containers/"+args[0]+"/snapshots/"+args[1], nil, bg3)
		},
	}
	asyncFlags(del, &bg3)
	c.AddCommand(create, list, rollback, del)
	return c
}

func (e *env) ctClone() *cobra.Command {
	var in wire.ContainerCloneRequest
	var bg bool
	c := &cobra.Command{
		Use:   "clone ID NEWID",
		Short: "Clone a container: the new one gets a copy of the writable layer only (the image stays shared)",
		Args:  exactArgs(2, "a container ID and the new ID"),
		RunE: func(c *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[1])
			if err != nil {
				return usageError{fmt.Errorf("new ID %q is not a number", args[1])}
			}
			in.NewID = n
			return e.runTask(c.Context(), "POST", "/api/v1/containers/"+args[0]+"/clone", in, bg)
		},
	}
	c.Flags().StringVar(&in.Name, "name", "", "name (and host name) of the clone")
	asyncFlags(c, &bg)
	return c
}
