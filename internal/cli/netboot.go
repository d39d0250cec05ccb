package cli

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
)

func (e *env) netbootCmd() *cobra.Command {
	c := &cobra.Command{Use: "netboot", Short: "Network boot: DHCP/BOOTP/ProxyDHCP, TFTP and HTTP/iPXE on chosen interfaces, the host database, leases"}
	c.AddCommand(e.netbootEnable(), e.netbootDisable(), e.netbootStatus(), e.netbootConfig(), e.netbootHost(), e.netbootLease())
	return c
}

func (e *env) netbootEnable() *cobra.Command {
	var in wire.NetbootEnable
	c := &cobra.Command{
		Use:   "enable --interface IFACE [--proxy | --range FIRST-LAST]",
		Short: "Serve network boot on an interface or bridge (it never answers on interfaces it was not given)",
		Long: `Serve network boot on an interface or bridge: DHCP (static hosts, and a
dynamic pool with --range) or, with --proxy, ProxyDHCP beside the network's own
DHCP server; TFTP and HTTP boot with per-host iPXE scripts on the interface's
address. The interface must exist and have an IPv4 address. Run it again to
change an interface's settings, or for further interfaces.`,
		Args: exactArgs(0, "no arguments (name the interface with --interface)"),
		RunE: func(c *cobra.Command, _ []string) error {
			if in.Name == "" {
				return usageError{fmt.Errorf("--interface is required")}
			}
			var cfg wire.NetbootConfig
			if err := e.do(c.Context(), "POST", "/api/v1/netboot/enable", in, &cfg); err != nil {
				return err
			}
			var st wire.NetbootStatus
			if err := e.do(c.Context(), "GET", "/api/v1/netboot/status", nil, &st); err != nil {
				return err
			}
			return e.showNetbootStatus(st)
		},
	}
	f := c.Flags()
	f.StringVarP(&in.Name, "interface", "i", "", "interface or bridge to serve")
	f.BoolVar(&in.Proxy, "proxy", false, "ProxyDHCP: only boot options, beside an existing DHCP server (ports 67 and 4011)")
	f.StringVar(&in.Range, "range", "", "dynamic address pool FIRST-LAST (default: static hosts only)")
	f.StringVar(&in.Router, "router", "", "default gateway handed out with leases")
	f.StringSliceVar(&in.DNS, "dns", nil, "DNS servers handed out with leases (comma-separated)")
	f.StringVar(&in.Domain, "domain", "", "domain name handed out with leases")
	f.IntVar(&in.LeaseTime, "lease-time", 0, "lease time in seconds (default 3600)")
	f.StringVar(&in.Root, "root", "", "directory served over TFTP and HTTP (default DATA-DIR/netboot/root)")
	f.IntVar(&in.HTTPPort, "http-port", 0, "HTTP boot port (default 8067)")
	return c
}

func (e *env) netbootDisable() *cobra.Command {
	var in wire.NetbootDisable
	c := &cobra.Command{
		Use:   "disable [--interface IFACE]",
		Short: "Stop serving network boot on one interface, or everywhere",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var cfg wire.NetbootConfig
			if err := e.do(c.Context(), "POST", "/api/v1/netboot/disable", in, &cfg); err != nil {
				return err
			}
			return e.show(cfg, func(w io.Writer) { kv(w, "enabled", cfg.Enabled, "interfaces", len(cfg.Interfaces)) })
		},
	}
	c.Flags().StringVarP(&in.Interface, "interface", "i", "", "interface to stop serving (default: all)")
	return c
}

func (e *env) netbootStatus() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show network boot state and per-service counters (offers, acks, naks, BOOTP, TFTP/HTTP transfers and bytes, errors)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var st wire.NetbootStatus
			if err := e.do(c.Context(), "GET", "/api/v1/netboot/status", nil, &st); err != nil {
				return err
			}
			return e.showNetbootStatus(st)
		},
	}
}

func (e *env) showNetbootStatus(st wire.NetbootStatus) error {
	return e.show(st, func(w io.Writer) {
		state := "disabled"
		switch {
		case st.Running:
			state = "running"
		case st.Enabled:
			state = "enabled, not running"
		}
		kv(w, "state", state)
		if st.Error != "" {
			kv(w, "error", st.Error)
		}
		for _, it := range st.Interfaces {
			mode := "dhcp"
			if it.Proxy {
				mode = "proxy"
			}
			kv(w, "interface", fmt.Sprintf("%s (%s, range %s)", it.Name, mode, dash(it.Range)))
		}
		for _, k := range []string{"dhcp", "tftp", "http", "diskless"} {
			if a := st.Addresses[k]; len(a) > 0 {
				kv(w, k+" listens", strings.Join(a, " "))
			}
		}
		kv(w, "hosts", st.Hosts, "leases", st.Leases)
		for _, k := range []string{"dhcp", "tftp", "http", "diskless"} {
			s, ok := st.Services[k]
			if !ok {
				continue
			}
			keys := make([]string, 0, len(s))
			for n := range s {
				keys = append(keys, n)
			}
			sort.Strings(keys)
			var parts []string
			for _, n := range keys {
				parts = append(parts, fmt.Sprintf("%s=%d", n, s[n]))
			}
			kv(w, k, strings.Join(parts, " "))
		}
	})
}

func (e *env) netbootConfig() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Show the network boot configuration and its digest",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var cfg wire.NetbootConfig
			if err := e.do(c.Context(), "GET", "/api/v1/netboot/config", nil, &cfg); err != nil {
				return err
			}
			return e.show(cfg, func(w io.Writer) {
				kv(w, "enabled", cfg.Enabled, "root", dash(cfg.Root), "http-port", cfg.HTTPPort, "digest", dash(cfg.Digest))
				for _, it := range cfg.Interfaces {
					kv(w, "interface", fmt.Sprintf("%s proxy=%v range=%s router=%s dns=%s lease-time=%d", it.Name, it.Proxy, dash(it.Range), dash(it.Router), dash(strings.Join(it.DNS, ",")), it.LeaseTime))
				}
			})
		},
	}
}

func hostFlags(c *cobra.Command, h *wire.NetbootHost, opts *[]string) {
	f := c.Flags()
	f.StringVar(&h.Name, "name", "", "host name (option 12)")
	f.StringVar(&h.IP, "ip", "", "fixed IPv4 address (default: from the pool)")
	f.StringVar(&h.BootFile, "bootfile", "", "boot file for non-iPXE clients, over TFTP")
	f.StringVar(&h.NextServer, "next-server", "", "TFTP server if not berth")
	f.StringVar(&h.RootPath, "root-path", "", "root path (option 17)")
	f.StringVar(&h.Kernel, "kernel", "", "kernel (path under the netboot root, or URL) for the host's iPXE script")
	f.StringVar(&h.Initrd, "initrd", "", "initrd for the host's iPXE script")
	f.StringVar(&h.Cmdline, "cmdline", "", "kernel command line")
	f.StringVar(&h.Root, "root", "", "diskless root image")
	f.StringVar(&h.Comment, "comment", "", "free text")
	f.StringArrayVar(opts, "option", nil, "extra DHCP option CODE=VALUE (IPv4 list, 0x-hex or text); repeatable")
}

func parseOpts(opts []string) (map[string]string, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return nil, usageError{fmt.Errorf("--option %q: write CODE=VALUE, e.g. 42=10.0.0.1", o)}
		}
		m[k] = v
	}
	return m, nil
}

func (e *env) netbootHost() *cobra.Command {
	c := &cobra.Command{Use: "host", Short: "The network boot host database: add, set, list, show, remove, import"}
	var h wire.NetbootHost
	var opts []string
	add := &cobra.Command{
		Use:   "add MAC",
		Short: "Add a host by MAC (exit 4 if it exists)",
		Args:  exactArgs(1, "the host's MAC address"),
		RunE: func(c *cobra.Command, args []string) error {
			h.MAC = args[0]
			var err error
			if h.Options, err = parseOpts(opts); err != nil {
				return err
			}
			var out wire.NetbootHost
			if err := e.do(c.Context(), "POST", "/api/v1/netboot/hosts", h, &out); err != nil {
				return err
			}
			return e.show(out, func(w io.Writer) { kv(w, "mac", out.MAC, "digest", out.Digest) })
		},
	}
	hostFlags(add, &h, &opts)

	var sh wire.NetbootHost
	var sopts, unset []string
	set := &cobra.Command{
		Use:   "set MAC",
		Short: "Change a host's fields (--unset FIELD clears one; --digest guards against concurrent changes)",
		Args:  exactArgs(1, "the host's MAC address"),
		RunE: func(c *cobra.Command, args []string) error {
			path := "/api/v1/netboot/hosts/" + url.PathEscape(args[0])
			var cur wire.NetbootHost
			if err := e.do(c.Context(), "GET", path, nil, &cur); err != nil {
				return err
			}
			if sh.Digest != "" && sh.Digest != cur.Digest {
				return &wire.Error{Status: 409, Code: "conflict", Message: "host changed since digest " + sh.Digest}
			}
			f := c.Flags()
			for flag, p := range map[string]*string{"name": &cur.Name, "ip": &cur.IP, "bootfile": &cur.BootFile, "next-server": &cur.NextServer,
				"root-path": &cur.RootPath, "kernel": &cur.Kernel, "initrd": &cur.Initrd, "cmdline": &cur.Cmdline, "root": &cur.Root, "comment": &cur.Comment} {
				if f.Changed(flag) {
					*p = *map[string]*string{"name": &sh.Name, "ip": &sh.IP, "bootfile": &sh.BootFile, "next-server": &sh.NextServer,
						"root-path": &sh.RootPath, "kernel": &sh.Kernel, "initrd": &sh.Initrd, "cmdline": &sh.Cmdline, "root": &sh.Root, "comment": &sh.Comment}[flag]
				}
				for _, u := range unset {
					if u == flag {
						*p = ""
					}
				}
			}
			o, err := parseOpts(sopts)
			if err != nil {
				return err
			}
			for k, v := range o {
				if cur.Options == nil {
					cur.Options = map[string]string{}
				}
				cur.Options[k] = v
			}
			for _, u := range unset {
				if code, ok := strings.CutPrefix(u, "option."); ok {
					delete(cur.Options, code)
				}
			}
			var out wire.NetbootHost
			if err := e.do(c.Context(), "PUT", path, cur, &out); err != nil {
				return err
			}
			return e.show(out, func(w io.Writer) { kv(w, "mac", out.MAC, "digest", out.Digest) })
		},
	}
	hostFlags(set, &sh, &sopts)
	set.Flags().StringSliceVar(&unset, "unset", nil, "fields to clear (name, ip, bootfile, …, option.CODE)")
	set.Flags().StringVar(&sh.Digest, "digest", "", "digest of the entry this change is based on")

	list := &cobra.Command{
		Use:   "list",
		Short: "List hosts",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var hs []wire.NetbootHost
			if err := e.do(c.Context(), "GET", "/api/v1/netboot/hosts", nil, &hs); err != nil {
				return err
			}
			return e.show(hs, func(w io.Writer) {
				row(w, "MAC", "NAME", "IP", "BOOTFILE", "KERNEL", "ROOT")
				for _, h := range hs {
					row(w, h.MAC, dash(h.Name), dash(h.IP), dash(h.BootFile), dash(h.Kernel), dash(h.Root))
				}
			})
		},
	}
	show := &cobra.Command{
		Use:   "show MAC",
		Short: "Show one host with its digest",
		Args:  exactArgs(1, "the host's MAC address"),
		RunE: func(c *cobra.Command, args []string) error {
			var h wire.NetbootHost
			if err := e.do(c.Context(), "GET", "/api/v1/netboot/hosts/"+url.PathEscape(args[0]), nil, &h); err != nil {
				return err
			}
			return e.show(h, func(w io.Writer) {
				kv(w, "mac", h.MAC, "name", dash(h.Name), "ip", dash(h.IP), "bootfile", dash(h.BootFile), "next-server", dash(h.NextServer),
					"root-path", dash(h.RootPath), "kernel", dash(h.Kernel), "initrd", dash(h.Initrd), "cmdline", dash(h.Cmdline), "root", dash(h.Root))
				for k, v := range h.Options {
					kv(w, "option "+k, v)
				}
				kv(w, "comment", dash(h.Comment), "digest", h.Digest)
			})
		},
	}
	var digest string
	remove := &cobra.Command{
		Use:   "remove MAC",
		Short: "Remove a host",
		Args:  exactArgs(1, "the host's MAC address"),
		RunE: func(c *cobra.Command, args []string) error {
			p := "/api/v1/netboot/hosts/" + url.PathEscape(args[0])
			if digest != "" {
				p += "?digest=" + url.QueryEscape(digest)
			}
			return e.do(c.Context(), "DELETE", p, nil, nil)
		},
	}
	remove.Flags().StringVar(&digest, "digest", "", "remove only if the entry still has this digest")
	c.AddCommand(add, set, list, show, remove, e.netbootImport())
	return c
}

func (e *env) netbootImport() *cobra.Command {
	var in wire.NetbootHostImport
	c := &cobra.Command{
		Use:   "import FILE --format bootptab|dnsmasq|dhcpd",
		Short: "Import hosts from /etc/bootptab, dnsmasq dhcp-host= lines or ISC dhcpd host blocks ('-' reads stdin)",
		Long: `Import hosts from a file: /etc/bootptab entries (name:ha=…:ip=…:bf=… with
continuation lines and tc= templates), dnsmasq dhcp-host= lines, or ISC dhcpd
'host NAME { hardware ethernet …; fixed-address …; … }' blocks. Lines that
cannot be read are listed with their numbers and nothing is imported (exit 8)
unless --skip-bad. Hosts whose MAC exists are updated.`,
		Args: exactArgs(1, "the file to import"),
		RunE: func(c *cobra.Command, args []string) error {
			if in.Format == "" {
				return usageError{fmt.Errorf("--format is required: bootptab, dnsmasq or dhcpd")}
			}
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(os.Stdin)
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return usageError{err}
			}
			in.Data = string(data)
			var res wire.NetbootImportResult
			if err := e.do(c.Context(), "POST", "/api/v1/netboot/hosts/import", in, &res); err != nil {
				return err
			}
			return e.show(res, func(w io.Writer) {
				for _, s := range res.Skipped {
					fmt.Fprintln(e.stderr, "skipped "+s)
				}
				verb := "imported"
				if in.DryRun {
					verb = "read (dry run)"
				}
				fmt.Fprintf(w, "%d host(s) %s: %d created, %d updated, %d line(s) skipped\n", len(res.Hosts), verb, res.Created, res.Updated, len(res.Skipped))
			})
		},
	}
	f := c.Flags()
	f.StringVar(&in.Format, "format", "", "bootptab, dnsmasq or dhcpd")
	f.BoolVar(&in.SkipBad, "skip-bad", false, "import the readable entries of a file with errors")
	f.BoolVar(&in.DryRun, "dry-run", false, "read and check only")
	return c
}

func (e *env) netbootLease() *cobra.Command {
	c := &cobra.Command{Use: "lease", Short: "DHCP leases of the dynamic pools"}
	c.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List leases (bound, released, declined, expired)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var ls []wire.NetbootLease
			if err := e.do(c.Context(), "GET", "/api/v1/netboot/leases", nil, &ls); err != nil {
				return err
			}
			return e.show(ls, func(w io.Writer) {
				row(w, "IP", "MAC", "HOSTNAME", "INTERFACE", "STATE", "EXPIRES")
				for _, l := range ls {
					row(w, l.IP, dash(l.MAC), dash(l.Hostname), dash(l.Interface), l.State, ts(l.Expires))
				}
			})
		},
	})
	return c
}
