// Package cli is berth's command line: `berth serve` runs the daemon and
// every other `berth NOUN VERB` is a client of its API (over the unix
// socket locally, over HTTPS remotely). It renders tables and JSON and
// follows task logs; it never edits berth's state itself.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
	"github.com/berthhq/berth/internal/daemon"
	"github.com/berthhq/berth/internal/guest"
)

// Version is set at build time with -ldflags "-X …/internal/cli.Version=…".
var Version = "0.1.0-dev"

// Exit codes, documented in docs/cli.md.
const (
	ExitOK          = 0
	ExitError       = 1 // anything not listed below
	ExitUsage       = 2 // bad flags or arguments
	ExitNotFound    = 3 // the object does not exist (404)
	ExitConflict    = 4 // stale digest, exists already, wrong state (409)
	ExitAuth        = 5 // not authenticated or not allowed (401, 403, 429)
	ExitTaskFailed  = 6 // the task ran and ended with an error
	ExitUnreachable = 7 // the daemon could not be reached
	ExitInvalid     = 8 // the daemon refused the input (400)
)

type usageError struct{ error }

type taskFailed struct{ t wire.Task }

func (e *taskFailed) Error() string { return "task failed: " + e.t.ExitStatus }

type unreachable struct{ error }

// ExitCode maps an error to the documented exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ue usageError
	var tf *taskFailed
	var un unreachable
	var ae *wire.Error
	var ec interface{ ExitCode() int }
	switch {
	case errors.As(err, &ec):
		return ec.ExitCode()
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &tf):
		return ExitTaskFailed
	case errors.As(err, &un):
		return ExitUnreachable
	case errors.As(err, &ae):
		switch ae.Status {
		case http.StatusNotFound:
			return ExitNotFound
		case http.StatusConflict:
			return ExitConflict
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
			return ExitAuth
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			return ExitInvalid
		}
	}
	return ExitError
}

// env holds what every command shares.
type env struct {
	stdout, stderr io.Writer
	drivers        []guest.Driver

	dataDir, socket       string
	server, token, caFile string
	fingerprint, output   string
	insecure, user        bool
	cl                    *client.Client
}

// Main runs the command line with args (without the program name) and
// returns the exit code. drivers are the guest drivers `serve` registers.
func Main(args []string, stdout, stderr io.Writer, drivers ...guest.Driver) int {
	e := &env{stdout: stdout, stderr: stderr, drivers: drivers}
	root := e.root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err != nil && message(err) != "" {
		fmt.Fprintln(stderr, "berth: "+message(err))
	}
	return ExitCode(err)
}

func message(err error) string {
	var ae *wire.Error
	if errors.As(err, &ae) {
		s := ae.Message
		for k, v := range ae.Fields {
			s += "\n  " + k + ": " + v
		}
		switch ae.Status {
		case http.StatusUnauthorized:
			s += "\n  (over HTTPS, pass --token or set BERTH_TOKEN; locally, run as root to use the unix socket)"
		}
		return s
	}
	return err.Error()
}

func (e *env) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "berth",
		Short: "berth manages a virtualization host: containers, VMs, UML guests, network boot and the host itself",
		Long: `berth is one binary: 'berth serve' runs the node daemon, and every other
'berth NOUN VERB' is a client of its REST API — over the daemon's root-only
unix socket locally, or over HTTPS with --server and --token.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w\nrun '%s --help' for usage", err, c.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&e.dataDir, "data-dir", envOr("BERTH_DATA_DIR", daemon.DefaultDataDir), "daemon data directory (store, task logs, socket) [$BERTH_DATA_DIR]")
	pf.StringVar(&e.socket, "socket", os.Getenv("BERTH_SOCKET"), "unix socket of the daemon (default DATA-DIR/berth.sock) [$BERTH_SOCKET]")
	pf.StringVar(&e.server, "server", os.Getenv("BERTH_SERVER"), "remote daemon URL, e.g. https://host:8006 [$BERTH_SERVER]")
	pf.StringVar(&e.token, "token", os.Getenv("BERTH_TOKEN"), "API token for --server [$BERTH_TOKEN]")
	pf.StringVar(&e.caFile, "ca", os.Getenv("BERTH_CA"), "CA certificate to trust for --server (DATA-DIR/pki/berth-root-ca.pem on the node) [$BERTH_CA]")
	pf.StringVar(&e.fingerprint, "fingerprint", os.Getenv("BERTH_FINGERPRINT"), "pin the server certificate's SHA-256 fingerprint instead of --ca [$BERTH_FINGERPRINT]")
	pf.BoolVar(&e.insecure, "insecure", false, "do not verify the server certificate (testing only)")
	pf.BoolVar(&e.user, "login", false, "log in with $BERTH_USER and $BERTH_PASSWORD for a ticket instead of a token")
	pf.StringVarP(&e.output, "output", "o", "table", "output format of reads: table or json")
	root.AddCommand(e.serveCmd(), e.versionCmd(), e.taskCmd(), e.nodeCmd(), e.tokenCmd(), e.userCmd(), e.guestCmd(), e.docsCmd(), e.imageCmd())
	root.AddCommand(e.ksmCmd(), e.ksmWorkloadCmd())
	root.AddCommand(e.netCmd(), e.hostnetHelperCmd())
	root.AddCommand(e.bootCmd())
	root.AddCommand(e.netbootCmd())
	root.AddCommand(e.ctCmd())
	root.AddCommand(e.ctHelperCmds()...)
	root.AddCommand(e.vmCmd(), e.umlCmd(), e.umlHelperCmd())
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// client connects lazily, once per invocation.
func (e *env) client(ctx context.Context) (*client.Client, error) {
	if e.cl != nil {
		return e.cl, nil
	}
	if e.output != "table" && e.output != "json" {
		return nil, usageError{fmt.Errorf("--output %q: use table or json", e.output)}
	}
	if e.server == "" {
		sock := e.socket
		if sock == "" {
			sock = filepath.Join(e.dataDir, daemon.SocketName)
		}
		if _, err := os.Stat(sock); err != nil {
			return nil, unreachable{fmt.Errorf("no daemon socket at %s: start the daemon with 'berth serve', or use --server URL --token TOKEN", sock)}
		}
		e.cl = client.NewUnix(sock)
		return e.cl, nil
	}
	o := client.TLSOptions{Fingerprint: e.fingerprint, Insecure: e.insecure}
	if e.caFile != "" {
		b, err := os.ReadFile(e.caFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--ca: %w", err)}
		}
		o.CAPEM = b
	}
	cl, err := client.NewHTTPS(e.server, e.token, o)
	if err != nil {
		return nil, usageError{err}
	}
	if e.user {
		if _, err := cl.Login(ctx, os.Getenv("BERTH_USER"), os.Getenv("BERTH_PASSWORD")); err != nil {
			return nil, err
		}
	}
	e.cl = cl
	return cl, nil
}

// do calls the API and wraps transport failures as unreachable.
func (e *env) do(ctx context.Context, method, path string, body, out any) error {
	cl, err := e.client(ctx)
	if err != nil {
		return err
	}
	return apiError(cl.Do(ctx, method, path, body, out))
}

// apiError passes the daemon's own errors on and makes any other (no
// answer at all) an unreachable daemon.
func apiError(err error) error {
	var ae *wire.Error
	if err != nil && !errors.As(err, &ae) {
		return unreachable{err}
	}
	return err
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s needs %s (got %d argument(s))\nusage: %s", c.CommandPath(), names, len(args), c.UseLine())}
		}
		return nil
	}
}
