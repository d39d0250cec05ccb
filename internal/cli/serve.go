package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthhq/berth/internal/daemon"
)

func (e *env) serveCmd() *cobra.Command {
	var o daemon.Options
	var logLevel, logFormat string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the node daemon (REST API over HTTPS and the root-only unix socket)",
		Long: `Run the node daemon in the foreground. On first start it creates the node
identity, the cluster CA and the node certificate in its store. SIGTERM or
SIGINT shuts it down gracefully: running tasks get --shutdown-timeout to
finish and are then cancelled; guests keep running.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{err}
			}
			hopts := &slog.HandlerOptions{Level: lvl}
			var h slog.Handler = slog.NewTextHandler(e.stderr, hopts)
			if logFormat == "json" {
				h = slog.NewJSONHandler(e.stderr, hopts)
			}
			o.Log = slog.New(h)
			o.DataDir = e.dataDir
			o.Version = Version
			o.Drivers = e.drivers
			o.Stdout = e.stdout
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return daemon.Run(ctx, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Listen, "listen", daemon.DefaultListen, "HTTPS address to serve on, or 'none'")
	f.StringVar(&o.Node, "node", "", "node name (default: the host name; fixed at first start)")
	f.StringVar(&o.InitToken, "init-token", "", "(re)create an admin API token of this name and print it once")
	f.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 60*time.Second, "how long SIGTERM waits for running tasks before cancelling them")
	f.StringVar(&o.ImageCache, "image-cache", os.Getenv("BERTH_IMAGE_CACHE"), "keep debootstrap's downloaded packages here and reuse them for image builds (default: no cache) [$BERTH_IMAGE_CACHE]")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	netServeFlags(f, &o)
	return c
}

func (e *env) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the client and daemon versions",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var v struct {
				Client string `json:"client"`
				Daemon any    `json:"daemon"`
			}
			v.Client = Version
			var dv map[string]string
			if err := e.do(c.Context(), "GET", "/api/v1/version", nil, &dv); err != nil {
				return err
			}
			v.Daemon = dv
			return e.show(v, func(w io.Writer) {
				kv(w, "client", Version, "daemon", dv["version"], "node", dv["node"])
			})
		},
	}
}
