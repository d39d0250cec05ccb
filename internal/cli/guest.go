package cli

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
)

func (e *env) guestCmd() *cobra.Command {
	c := &cobra.Command{Use: "guest", Short: "Guests of every kind: list, configure, start, shut down, stop, destroy"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List guests with kind, run state and startup settings",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var gs []wire.Guest
			if err := e.do(c.Context(), "GET", "/api/v1/guests", nil, &gs); err != nil {
				return err
			}
			return e.show(gs, func(w io.Writer) {
				row(w, "ID", "KIND", "NAME", "STATUS", "ONBOOT", "STARTUP")
				for _, g := range gs {
					row(w, g.ID, g.Kind, dash(g.Name), g.Status, g.OnBoot, dash(guest.FormatStartup(g.Startup)))
				}
			})
		},
	}
	c.AddCommand(list, e.guestConfig(), e.guestCreate())
	for _, a := range []string{"start", "shutdown", "stop"} {
		c.AddCommand(e.guestAction(a))
	}
	var bg bool
	destroy := &cobra.Command{
		Use:   "destroy ID",
		Short: "Destroy a stopped guest and its configuration",
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "DELETE", "/api/v1/guests/"+args[0], nil, bg)
		},
	}
	asyncFlags(destroy, &bg)
	c.AddCommand(destroy)
	return c
}

func (e *env) guestAction(action string) *cobra.Command {
	var bg bool
	var timeout int
	short := map[string]string{"start": "Start a guest", "shutdown": "Shut a guest down cleanly (hard stop after --timeout)", "stop": "Stop a guest at once (hard)"}[action]
	c := &cobra.Command{
		Use:   action + " ID",
		Short: short,
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			path := "/api/v1/guests/" + args[0] + "/status/" + action
			if timeout > 0 {
				path += fmt.Sprintf("?timeout=%d", timeout)
			}
			return e.runTask(c.Context(), "POST", path, nil, bg)
		},
	}
	if action == "shutdown" {
		c.Flags().IntVar(&timeout, "timeout", 0, "seconds before a hard stop (default: the guest's down= or 180)")
	}
	asyncFlags(c, &bg)
	return c
}

func (e *env) guestConfig() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Get or set a guest's configuration"}
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a guest's configuration and digest",
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			var g wire.Guest
			if err := e.do(c.Context(), "GET", "/api/v1/guests/"+args[0], nil, &g); err != nil {
				return err
			}
			return e.show(g, func(w io.Writer) {
				kv(w, "id", g.ID, "kind", g.Kind, "name", dash(g.Name), "status", g.Status, "onboot", g.OnBoot,
					"startup", dash(guest.FormatStartup(g.Startup)))
				keys := make([]string, 0, len(g.Config))
				for k := range g.Config {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					kv(w, k, g.Config[k])
				}
				kv(w, "digest", g.Digest)
			})
		},
	}
	var u wire.GuestConfigUpdate
	var name, startup string
	var onboot bool
	var sets []string
	set := &cobra.Command{
		Use:   "set ID",
		Short: "Change a guest's options; --digest makes it fail (exit 4) if the guest changed meanwhile",
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			f := c.Flags()
			if f.Changed("name") {
				u.Name = &name
			}
			if f.Changed("onboot") {
				u.OnBoot = &onboot
			}
			if f.Changed("startup") {
				st, err := guest.ParseStartup(startup)
				if err != nil {
					return usageError{fmt.Errorf("--startup: %w", err)}
				}
				u.Startup = &st
			}
			var err error
			if u.Config, err = parseSets(sets); err != nil {
				return err
			}
			var g wire.Guest
			if err := e.do(c.Context(), "PUT", "/api/v1/guests/"+args[0]+"/config", u, &g); err != nil {
				return err
			}
			return e.show(g, func(w io.Writer) { kv(w, "digest", g.Digest) })
		},
	}
	f := set.Flags()
	f.StringVar(&name, "name", "", "guest name (a DNS name)")
	f.BoolVar(&onboot, "onboot", false, "start the guest when the host boots")
	f.StringVar(&startup, "startup", "", "order=N,up=S,down=S")
	f.StringArrayVar(&sets, "set", nil, "driver option KEY=VALUE (repeatable)")
	f.StringSliceVar(&u.Delete, "delete", nil, "driver options to remove")
	f.StringVar(&u.Digest, "digest", "", "digest of the configuration this change is based on")
	c.AddCommand(get, set)
	return c
}

func (e *env) guestCreate() *cobra.Command {
	var g wire.Guest
	var kind, startup string
	var sets []string
	var bg bool
	c := &cobra.Command{
		Use:   "create ID --kind container|vm|uml",
		Short: "Create a guest of any kind from generic options (kind-specific commands come with each driver)",
		Args:  exactArgs(1, "a guest ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.Atoi(args[0])
			if err != nil {
				return usageError{fmt.Errorf("guest ID %q is not a number (use 100-999999999)", args[0])}
			}
			g.ID, g.Kind = id, wire.GuestKind(kind)
			if startup != "" {
				if g.Startup, err = guest.ParseStartup(startup); err != nil {
					return usageError{fmt.Errorf("--startup: %w", err)}
				}
			}
			if g.Config, err = parseSets(sets); err != nil {
				return err
			}
			return e.runTask(c.Context(), "POST", "/api/v1/guests", g, bg)
		},
	}
	f := c.Flags()
	f.StringVar(&kind, "kind", "", "container, vm or uml")
	f.StringVar(&g.Name, "name", "", "guest name (a DNS name)")
	f.BoolVar(&g.OnBoot, "onboot", false, "start the guest when the host boots")
	f.StringVar(&startup, "startup", "", "order=N,up=S,down=S")
	f.StringArrayVar(&sets, "set", nil, "driver option KEY=VALUE (repeatable)")
	asyncFlags(c, &bg)
	return c
}

// parseSets turns repeated --set KEY=VALUE flags into a driver option map
// (nil when there are none).
func parseSets(sets []string) (map[string]string, error) {
	var m map[string]string
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("--set %q: use KEY=VALUE", s)}
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m, nil
}
