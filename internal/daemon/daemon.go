// Package daemon wires berth's services together and runs the node daemon:
// it opens the store, creates the node identity and certificates on first
// start, repairs what a crash left behind, serves the API on the unix socket
// and over HTTPS, starts onboot guests after a host boot, and shuts down
// gracefully. It holds no business logic of its own.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/api"
	"github.com/berthhq/berth/internal/atomicfile"
	"github.com/berthhq/berth/internal/auth"
	"github.com/berthhq/berth/internal/certs"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/guest/container"
	"github.com/berthhq/berth/internal/guest/qemu"
	"github.com/berthhq/berth/internal/hostnet"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/netboot"
	"github.com/berthhq/berth/internal/node"
	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/task"
)

// DefaultDataDir is where berth keeps its store, task logs and socket.
const DefaultDataDir = "/var/lib/berth"

// DefaultListen is the HTTPS address, Proxmox's port.
const DefaultListen = ":8006"

// SocketName is the unix socket's file name inside the data dir.
const SocketName = "berth.sock"

// Options configure Run.
type Options struct {
	DataDir string
	// Listen is the HTTPS address; "none" disables HTTPS.
	Listen  string
	Node    string
	Version string
	Drivers []guest.Driver
	// InitToken, when set, (re)creates an admin API token of that name
	// and prints its secret to Stdout: for first contact and `make run`.
	InitToken string
	// ShutdownTimeout bounds how long SIGTERM waits for running tasks
	// before cancelling them.
	ShutdownTimeout time.Duration
	Log             *slog.Logger
	Stdout          io.Writer
	// Host is where node status is read; zero means the real system.
	Host node.Host
	// Ready, if set, is called once the daemon serves requests.
	Ready func(httpsAddr string)
	// ImageCache, when set, is where image builds keep debootstrap's
	// downloaded packages for reuse (see image.WithDebootstrapCache).
	ImageCache string
	// HostNet says which interfaces file and network namespace berth
	// manages and how to start the apply helper; Run fills in the store,
	// tasks and log.
	HostNet hostnet.Options
}

type identity struct {
	Name    string `json:"name"`
	Created int64  `json:"created"`
}

// Run runs the daemon until ctx is cancelled, then shuts down gracefully:
// listeners close, running tasks get ShutdownTimeout to finish and are then
// cancelled, guests keep running.
func Run(ctx context.Context, o Options) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 60 * time.Second
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	// A live daemon answers on the socket: say so at once rather than
	// waiting for the store's lock to time out.
	if c, err := net.DialTimeout("unix", filepath.Join(o.DataDir, SocketName), time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use: another berth daemon runs on this data dir", filepath.Join(o.DataDir, SocketName))
	}
	st, err := store.Open(filepath.Join(o.DataDir, "berth.db"))
	if err != nil {
		return err
	}
	defer st.Close()

	name, err := nodeName(ctx, st, o.Node)
	if err != nil {
		return err
	}
	log := o.Log.With("node", name)
	ca, cert, err := ensureCerts(ctx, st, o.DataDir, name, log)
	if err != nil {
		return err
	}
	au, err := auth.New(ctx, st, log)
	if err != nil {
		return err
	}
	if o.InitToken != "" {
		if err := initToken(ctx, au, o.InitToken, o.Stdout); err != nil {
			return err
		}
	}
	tasks, err := task.NewManager(st, filepath.Join(o.DataDir, "tasks"), name, log, task.Options{})
	if err != nil {
		return err
	}
	if n, err := tasks.Recover(ctx); err != nil {
		return fmt.Errorf("recover task index: %w", err)
	} else if n > 0 {
		log.Warn("tasks interrupted by a crash marked as 'unexpected status'", "count", n)
	}
	if err := tasks.Prune(ctx); err != nil {
		log.Warn("task retention", "err", err)
	}
	o.Drivers = withContainerDriver(o, st, log)
	defer closeDrivers(o.Drivers)
	o.Drivers = withVMDrivers(o, o.Drivers, log)
	reg := guest.NewRegistry(st, o.Drivers...)
	adoptContainers(ctx, reg, log)
	adoptVMs(ctx, reg, log)
	imgs, err := openImages(ctx, st, o, reg, log)
	if err != nil {
		return err
	}
	sv := &api.Services{Node: name, Version: o.Version, Log: log, Store: st, Auth: au, Tasks: tasks, Guests: reg, Host: o.Host, CAPEM: ca.CertPEM, CertPEM: cert.CertPEM}
	// KSM: make the kernel match the stored mode; the tuner runs from
	// when the daemon serves until shutdown (internal/ksm).
	sv.KSM = ksm.New(ksm.Options{Sysfs: ksm.SysfsUnder(o.Host.Sys), Proc: ksm.Proc(o.Host.Proc), Store: st, Log: log.With("area", "ksm"), Guests: sv.KSMGuests})
	if err := sv.KSM.Repair(ctx); err != nil {
		log.Warn("KSM repair at start", "err", err)
	}
	// Guests start unmergeable while the node's KSM mode is off.
	for _, d := range o.Drivers {
		switch d := d.(type) {
		case *qemu.Driver:
			d.KSMAllowed = sv.KSM.MergeAllowed
		case *container.Driver:
			d.SetKSMAllowed(sv.KSM.MergeAllowed)
		}
	}
	sv.Images = imgs
	// Host networking: staged interfaces changes, live apply, and pending
	// rollbacks that survive a restart (internal/hostnet).
	hn := o.HostNet
	hn.Store, hn.Tasks, hn.Log = st, tasks, log.With("area", "hostnet")
	sv.HostNet = hostnet.New(hn)
	defer sv.HostNet.Close()
	if err := sv.HostNet.Resume(ctx); err != nil {
		log.Warn("network rollback at start", "err", err)
	}
	// Network boot: off unless enabled, and then only on the configured
	// interfaces (internal/netboot). A failure to serve is logged and
	// shown by 'berth netboot status'; the daemon still starts.
	nb, err := netboot.New(ctx, netboot.Options{Store: st, DataDir: o.DataDir, Log: log.With("area", "netboot")})
	if err != nil {
		return err
	}
	sv.Netboot = nb
	defer nb.Close()
	if err := nb.StartRetrying(ctx, 3*time.Second); err != nil {
		log.Error("netboot not serving yet (retrying every 3 s)", "err", err)
	}
	srv, err := api.NewServer(log, au, o.Version, sv.Routes())
	if err != nil {
		return err
	}
	srv.SetTaskFollower(sv.FollowTask)

	sock, err := listenUnix(filepath.Join(o.DataDir, SocketName))
	if err != nil {
		return err
	}
	unixSrv := api.HTTPServer(srv, log)
	unixSrv.ConnContext = api.ConnContext
	errc := make(chan error, 2)
	go func() { errc <- serve(unixSrv.Serve(sock)) }()

	var httpsSrv *http.Server
	httpsAddr := ""
	if o.Listen != "none" {
		kp, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			return fmt.Errorf("load node certificate: %w", err)
		}
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			unixSrv.Close()
			return fmt.Errorf("listen on %s: %w (is another daemon using the port? choose one with --listen)", o.Listen, err)
		}
		httpsAddr = ln.Addr().String()
		httpsSrv = api.HTTPServer(srv, log)
		httpsSrv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{kp}}
		go func() { errc <- serve(httpsSrv.ServeTLS(ln, "", "")) }()
	}
	log.Info("berth daemon ready", "version", o.Version, "socket", sock.Addr().String(), "https", httpsAddr, "data", o.DataDir)
	if o.InitToken != "" && httpsAddr != "" {
		fp, _ := certs.Fingerprint(cert.CertPEM)
		fmt.Fprintf(o.Stdout, "API: https://%s/api/v1/\nCA certificate: %s\nserver fingerprint: %s\ntry: curl --cacert %[2]s -H 'Authorization: Bearer <token>' https://%[1]s/api/v1/node/status\n",
			httpsAddr, filepath.Join(o.DataDir, "pki", "berth-root-ca.pem"), fp)
	}
	if o.Ready != nil {
		o.Ready(httpsAddr)
	}
	ksmDone := make(chan struct{})
	go func() { defer close(ksmDone); sv.KSM.Run(ctx) }()
	bootStart(ctx, st, sv, log)

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			log.Error("listener failed", "err", err)
		}
	}
	log.Info("shutting down: closing listeners, waiting for running tasks", "running", tasks.Running(), "timeout", o.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	// Stop taking new requests first; streams of running tasks end when
	// the tasks do.
	go unixSrv.Shutdown(sctx)
	if httpsSrv != nil {
		go httpsSrv.Shutdown(sctx)
	}
	if err := tasks.Shutdown(sctx); err != nil {
		log.Warn("task shutdown", "err", err)
	}
	<-ksmDone // the tuner stops with ctx; wait before the store closes
	unixSrv.Close()
	if httpsSrv != nil {
		httpsSrv.Close()
	}
	log.Info("berth daemon stopped")
	return nil
}

func serve(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// listenUnix creates the root-only socket, replacing a stale one but
// refusing to steal the socket of a live daemon.
func listenUnix(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use: another berth daemon runs on this data dir", path)
	}
	_ = os.Remove(path)
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict %s: %w", path, err)
	}
	return ln, nil
}

func nodeName(ctx context.Context, st store.Store, want string) (string, error) {
	id, _, err := store.GetJSON[identity](ctx, st, "node/identity")
	if err == nil {
		if want != "" && want != id.Name {
			return "", fmt.Errorf("this data dir belongs to node %q, not %q: drop --node or use another --data-dir", id.Name, want)
		}
		return id.Name, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("read node identity: %w", err)
	}
	if want == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("hostname: %w (give a name with --node)", err)
		}
		want, _, _ = strings.Cut(h, ".")
	}
	if err := task.ValidNodeName(want); err != nil {
		return "", fmt.Errorf("node name %q: %w", want, err)
	}
	if _, err := store.PutJSON(ctx, st, "node/identity", identity{Name: want, Created: time.Now().Unix()}, store.Cond{Create: true}); err != nil {
		return "", fmt.Errorf("store node identity: %w", err)
	}
	return want, nil
}

// ensureCerts creates the cluster CA (kept in the store, like pve-root-ca)
// and this node's certificate, renewing the latter 30 days before expiry.
// The public halves are also written to DATA/pki for clients.
func ensureCerts(ctx context.Context, st store.Store, dataDir, name string, log *slog.Logger) (ca, cert certs.Pair, err error) {
	now := time.Now()
	ca, _, err = store.GetJSON[certs.Pair](ctx, st, "certs/ca")
	if errors.Is(err, store.ErrNotFound) {
		log.Info("creating cluster CA")
		if ca, err = certs.NewCA(name, now); err != nil {
			return ca, cert, err
		}
		if _, err = store.PutJSON(ctx, st, "certs/ca", ca, store.Cond{Create: true}); err != nil {
			return ca, cert, fmt.Errorf("store CA: %w", err)
		}
	} else if err != nil {
		return ca, cert, fmt.Errorf("read CA: %w", err)
	}
	key := "certs/nodes/" + name
	cert, digest, err := store.GetJSON[certs.Pair](ctx, st, key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return ca, cert, fmt.Errorf("read node certificate: %w", err)
	}
	if err != nil || certs.NeedsRenewal(cert.CertPEM, now, 30*24*time.Hour) {
		log.Info("issuing node certificate")
		if cert, err = certs.IssueNode(ca, name, nil, now); err != nil {
			return ca, cert, err
		}
		cond := store.Cond{Digest: digest}
		if digest == "" {
			cond = store.Cond{Create: true}
		}
		if _, err = store.PutJSON(ctx, st, key, cert, cond); err != nil {
			return ca, cert, fmt.Errorf("store node certificate: %w", err)
		}
	}
	pki := filepath.Join(dataDir, "pki")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		return ca, cert, err
	}
	for file, data := range map[string][]byte{"berth-root-ca.pem": ca.CertPEM, "berth-ssl.pem": cert.CertPEM} {
		if err := atomicfile.WriteFile(filepath.Join(pki, file), data, 0o644); err != nil {
			return ca, cert, err
		}
	}
	return ca, cert, nil
}

func initToken(ctx context.Context, au *auth.Service, name string, out io.Writer) error {
	if err := au.RemoveToken(ctx, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	sec, err := au.CreateToken(ctx, wire.TokenCreate{Name: name, Role: wire.RoleAdmin, Comment: "created by berth serve --init-token"})
	if err != nil {
		return fmt.Errorf("init token: %w", err)
	}
	fmt.Fprintf(out, "admin API token %q (shown once): %s\n", name, sec.Value)
	return nil
}

// bootStart runs startall (with the onboot delay) once per host boot: a
// daemon restart on the same boot leaves guests as they are.
func bootStart(ctx context.Context, st store.Store, sv *api.Services, log *slog.Logger) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return
	}
	bootID := strings.TrimSpace(string(b))
	last, digest, err := store.GetJSON[string](ctx, st, "node/last-boot")
	if err == nil && last == bootID {
		return
	}
	cond := store.Cond{Digest: digest}
	if digest == "" {
		cond = store.Cond{Create: true}
	}
	if _, err := store.PutJSON(ctx, st, "node/last-boot", bootID, cond); err != nil {
		log.Warn("record boot id", "err", err)
		return
	}
	gs, err := sv.Guests.List(ctx)
	if err != nil || len(guest.StartOrder(gs)) == 0 {
		return
	}
	if _, err := sv.StartOnBoot(); err != nil {
		log.Warn("onboot start", "err", err)
	}
}
