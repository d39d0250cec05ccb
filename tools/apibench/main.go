// Command apibench measures the read throughput and latency of berth's HTTPS
// API beside a bare net/http handler, in one run on one machine.
//
// It starts the real daemon in-process on a temporary data dir, sets a node
// configuration, and fetches GET /api/v1/node/config once. A bare net/http
// HTTPS server then serves exactly those bytes with the same headers, using
// a certificate of the same kind (ECDSA P-256 from internal/certs) and the
// same TLS settings. The closed-loop load generator of internal/loadgen hits
// both in alternating rounds, so that machine noise hits both alike, and
// apibench prints a Markdown table (or JSON with -json) with the median
// throughput, latency percentiles and the berth/bare throughput ratio.
//
// It exits 1 when any request failed or the ratio is below -min-ratio, and 2
// when the benchmark could not be set up.
//
// Usage:
//
//	go run ./tools/apibench [-duration 5s] [-warmup 1s] [-concurrency 32] [-rounds 3] [-min-ratio 0.5] [-json] [-cpuprofile FILE]
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
	"github.com/berthhq/berth/internal/certs"
	"github.com/berthhq/berth/internal/daemon"
	"github.com/berthhq/berth/internal/loadgen"
	"github.com/berthhq/berth/internal/syncbuf"
)

// configPath is the route under test: it authenticates the bearer token (a
// store read and a SHA-256), reads the node config from the store and
// encodes it as JSON in berth's envelope.
const configPath = "/api/v1/node/config"

// description makes the node config, and so the body, realistic.
const description = "Rack B3, slot 12: Supermicro X11, 2x Xeon Silver 4214, 256 GiB RAM, 2x NVMe mirror.\n" +
	"Owner: platform team (#infra-oncall). Maintenance window: Tue 02:00-04:00 UTC.\n" +
	"Managed by berth; set by tools/apibench."

type options struct {
	duration, warmup time.Duration
	concurrency      int
	rounds           int
	minRatio         float64
	json             bool
	cpuprofile       string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured `time` of each round per target")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured `time` before each round")
	flag.IntVar(&o.concurrency, "concurrency", 32, "closed-loop workers, one keep-alive connection each")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per target; the targets alternate")
	flag.Float64Var(&o.minRatio, "min-ratio", 0.5, "exit 1 if berth's throughput is below this `fraction` of the bare handler's (0 disables)")
	flag.BoolVar(&o.json, "json", false, "print the result as JSON instead of a Markdown table")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the measured rounds (both targets) to `file`")
	flag.Parse()
	if flag.NArg() > 0 || o.duration <= 0 || o.warmup < 0 || o.concurrency < 1 || o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "apibench: -duration must be positive, -warmup not negative, -concurrency and -rounds at least 1, and there are no arguments")
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(o))
}

// target is one server under load and what the rounds measured.
type target struct {
	Name    string
	URL     string
	header  http.Header
	results []loadgen.Result
}

func run(o options) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "apibench: "+format+"\n", a...)
		return 2
	}

	dir, err := os.MkdirTemp("", "berth-apibench-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)

	// The daemon, in-process.
	out := &syncbuf.Buffer{}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	dctx, stopDaemon := context.WithCancel(ctx)
	go func() {
		done <- daemon.Run(dctx, daemon.Options{
			DataDir: dir, Listen: "127.0.0.1:0", Node: "apibench", Version: "apibench",
			InitToken: "bench", Stdout: out, Log: slog.New(slog.DiscardHandler),
			ShutdownTimeout: 5 * time.Second,
			Ready:           func(addr string) { ready <- addr },
		})
	}()
	defer func() {
		stopDaemon()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			fmt.Fprintln(os.Stderr, "apibench: the daemon did not stop within 10s")
		}
	}()
	var berthAddr string
	select {
	case berthAddr = <-ready:
	case err := <-done:
		return fail("the daemon stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		return fail("the daemon was not ready within 30s")
	}
	token := regexp.MustCompile(`berth\.bench\.\S+`).FindString(out.String())
	if token == "" {
		return fail("no token in the daemon's output %q", out.String())
	}
	berthCA, err := os.ReadFile(filepath.Join(dir, "pki", "berth-root-ca.pem"))
	if err != nil {
		return fail("%v", err)
	}
	berthURL := "https://" + berthAddr

	// A realistic node config, set once through the public client.
	cl, err := client.NewHTTPS(berthURL, token, client.TLSOptions{CAPEM: berthCA})
	if err != nil {
		return fail("%v", err)
	}
	desc, mac, delay := description, "aa:bb:cc:dd:ee:ff", 30
	var cfg wire.NodeConfig
	if err := cl.Do(ctx, http.MethodPut, configPath, wire.NodeConfigUpdate{Description: &desc, WakeOnLAN: &mac, StartallOnbootDelay: &delay}, &cfg); err != nil {
		return fail("set the node config: %v", err)
	}

	// The bare server: its own P-256 CA and node certificate, the same TLS
	// settings as the daemon.
	bareCA, bareCert, err := newCert()
	if err != nil {
		return fail("%v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(berthCA) || !pool.AppendCertsFromPEM(bareCA) {
		return fail("cannot load the CA certificates")
	}
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}

	berth := &target{Name: "berth GET " + configPath, URL: berthURL + configPath,
		header: http.Header{"Authorization": {"Bearer " + token}}}
	probeClient := loadgen.NewClient(1, clientTLS)
	body, hdr, berthConn, err := probe(ctx, probeClient, berth.URL, berth.header)
	if err != nil {
		return fail("fetch berth's answer: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail("%v", err)
	}
	bareSrv := &http.Server{
		Handler: bareHandler(body, hdr),
		// The same TLS settings as the daemon's HTTPS listener.
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{bareCert}},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	go func() { _ = bareSrv.ServeTLS(ln, "", "") }()
	defer bareSrv.Close()
	bare := &target{Name: "bare net/http, same body", URL: "https://" + ln.Addr().String() + configPath}
	bareBody, _, bareConn, err := probe(ctx, probeClient, bare.URL, nil)
	if err != nil {
		return fail("probe the bare server: %v", err)
	}
	if !bytes.Equal(bareBody, body) {
		return fail("the bare server's body differs from berth's")
	}
	probeClient.CloseIdleConnections()

	// The rounds, alternating which target goes first.
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return fail("%v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail("%v", err)
		}
	}
	for i := range o.rounds {
		order := []*target{berth, bare}
		if i%2 == 1 {
			order = []*target{bare, berth}
		}
		for _, t := range order {
			c := loadgen.NewClient(o.concurrency, clientTLS.Clone())
			runtime.GC() // start both targets from the same heap state
			res, err := loadgen.Run(ctx, loadgen.Config{URL: t.URL, Header: t.header, Concurrency: o.concurrency,
				Duration: o.duration, Warmup: o.warmup, Client: c})
			c.CloseIdleConnections()
			if err != nil {
				return fail("%s: %v", t.Name, err)
			}
			t.results = append(t.results, res)
			if !o.json {
				fmt.Fprintf(os.Stderr, "round %d/%d %-32s %9.0f req/s  p99 %s  errors %d\n", i+1, o.rounds, t.Name, res.Throughput, ms(res.P99), res.Errors)
			}
		}
	}
	if o.cpuprofile != "" {
		pprof.StopCPUProfile()
	}

	rep := newReport(o, []*target{berth, bare}, len(body), berthConn)
	if bareConn != berthConn {
		rep.Note += fmt.Sprintf(" Warning: the bare server negotiated %s, berth %s.", bareConn, berthConn)
	}
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail("%v", err)
		}
	} else {
		rep.markdown(os.Stdout)
	}

	code := 0
	if rep.Errors > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d requests failed; first error: %s\n", rep.Errors, rep.firstError)
		code = 1
	}
	if o.minRatio > 0 && rep.Ratio < o.minRatio {
		fmt.Fprintf(os.Stderr, "FAIL: berth's throughput is %.2f of the bare handler's, below the required %.2f (-min-ratio)\n", rep.Ratio, o.minRatio)
		code = 1
	}
	return code
}

// newCert makes a CA and a node certificate for the bare server the way the
// daemon makes its own.
func newCert() (caPEM []byte, cert tls.Certificate, err error) {
	now := time.Now()
	ca, err := certs.NewCA("apibench", now)
	if err != nil {
		return nil, cert, err
	}
	node, err := certs.IssueNode(ca, "apibench", nil, now)
	if err != nil {
		return nil, cert, err
	}
	cert, err = tls.X509KeyPair(node.CertPEM, node.KeyPEM)
	return ca.CertPEM, cert, err
}

// probe GETs url once and returns the body, the headers worth copying and
// a description of the connection.
func probe(ctx context.Context, c *http.Client, url string, h http.Header) ([]byte, http.Header, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, "", err
	}
	if h != nil {
		req.Header = h.Clone()
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, "", fmt.Errorf("HTTP %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	keep := http.Header{}
	for _, k := range []string{"Content-Type", "Cache-Control", "X-Content-Type-Options"} {
		if v := resp.Header.Get(k); v != "" {
			keep.Set(k, v)
		}
	}
	conn := resp.Proto
	if resp.TLS != nil {
		conn = fmt.Sprintf("%s, %s, %s", tls.VersionName(resp.TLS.Version), tls.CipherSuiteName(resp.TLS.CipherSuite), resp.Proto)
		if len(resp.TLS.PeerCertificates) > 0 {
			conn += ", " + keyName(resp.TLS.PeerCertificates[0])
		}
	}
	return body, keep, conn, nil
}

func keyName(c *x509.Certificate) string {
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		return "ECDSA " + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

// bareHandler serves body with the headers berth sent, whatever the path.
func bareHandler(body []byte, h http.Header) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range h {
			w.Header()[k] = v
		}
		_, _ = w.Write(body)
	})
}

// Reporting ----------------------------------------------------------------

type report struct {
	Go          string         `json:"go"`
	OSArch      string         `json:"os_arch"`
	GOMAXPROCS  int            `json:"gomaxprocs"`
	NumCPU      int            `json:"num_cpu"`
	CPU         string         `json:"cpu"`
	Connection  string         `json:"connection"`
	BodyBytes   int            `json:"body_bytes"`
	Concurrency int            `json:"concurrency"`
	Duration    string         `json:"duration"`
	Warmup      string         `json:"warmup"`
	Rounds      int            `json:"rounds"`
	Targets     []targetReport `json:"targets"`
	Ratio       float64        `json:"ratio"`
	MinRatio    float64        `json:"min_ratio"`
	Errors      int            `json:"errors"`
	Pass        bool           `json:"pass"`
	Note        string         `json:"note"`
	firstError  string
}

type targetReport struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// ReqPerSec, P50 and P99 are medians over the rounds.
	ReqPerSec float64       `json:"req_per_sec"`
	P50MS     float64       `json:"p50_ms"`
	P99MS     float64       `json:"p99_ms"`
	Errors    int           `json:"errors"`
	Rounds    []roundReport `json:"rounds"`
}

type roundReport struct {
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	ReqPerSec float64 `json:"req_per_sec"`
	P50MS     float64 `json:"p50_ms"`
	P90MS     float64 `json:"p90_ms"`
	P99MS     float64 `json:"p99_ms"`
	MaxMS     float64 `json:"max_ms"`
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", msf(d)) }

// median returns the median of v (the mean of the middle two for an even
// count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func newReport(o options, ts []*target, bodyBytes int, conn string) *report {
	r := &report{
		Go: runtime.Version(), OSArch: runtime.GOOS + "/" + runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), CPU: cpuModel(),
		Connection: conn + ", keep-alive", BodyBytes: bodyBytes, Concurrency: o.concurrency,
		Duration: o.duration.String(), Warmup: o.warmup.String(), Rounds: o.rounds, MinRatio: o.minRatio,
		Note: "Both servers and the load generator run in this one process and share its GOMAXPROCS cores, " +
			"which is fair to both targets but understates what either serves to remote clients.",
	}
	for _, t := range ts {
		tr := targetReport{Name: t.Name, URL: t.URL}
		var rps, p50, p99 []float64
		for _, res := range t.results {
			tr.Errors += res.Errors
			if r.firstError == "" && res.ErrorSample != "" {
				r.firstError = t.Name + ": " + res.ErrorSample
			}
			rps = append(rps, res.Throughput)
			p50 = append(p50, msf(res.P50))
			p99 = append(p99, msf(res.P99))
			tr.Rounds = append(tr.Rounds, roundReport{Requests: res.Requests, Errors: res.Errors, ReqPerSec: res.Throughput,
				P50MS: msf(res.P50), P90MS: msf(res.P90), P99MS: msf(res.P99), MaxMS: msf(res.Max)})
		}
		tr.ReqPerSec, tr.P50MS, tr.P99MS = median(rps), median(p50), median(p99)
		r.Errors += tr.Errors
		r.Targets = append(r.Targets, tr)
	}
	if len(r.Targets) == 2 && r.Targets[1].ReqPerSec > 0 {
		r.Ratio = r.Targets[0].ReqPerSec / r.Targets[1].ReqPerSec
	}
	r.Pass = r.Errors == 0 && (o.minRatio <= 0 || r.Ratio >= o.minRatio)
	return r
}

func (r *report) markdown(w io.Writer) {
	fmt.Fprintf(w, "| target | rounds | req/s (median) | p50 | p99 | errors |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|\n")
	for _, t := range r.Targets {
		fmt.Fprintf(w, "| %s | %d | %.0f | %.2f ms | %.2f ms | %d |\n", t.Name, len(t.Rounds), t.ReqPerSec, t.P50MS, t.P99MS, t.Errors)
	}
	verdict := "OK"
	if r.MinRatio > 0 && r.Ratio < r.MinRatio {
		verdict = "BELOW GOAL"
	}
	fmt.Fprintf(w, "\n**berth / bare throughput: %.2f** (goal ≥ %.2f: %s)\n\n", r.Ratio, r.MinRatio, verdict)
	for _, t := range r.Targets {
		var parts []string
		for _, rr := range t.Rounds {
			parts = append(parts, fmt.Sprintf("%.0f", rr.ReqPerSec))
		}
		fmt.Fprintf(w, "- %s, req/s per round: %s\n", t.Name, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "- Go %s %s, GOMAXPROCS %d (NumCPU %d), CPU: %s\n", r.Go, r.OSArch, r.GOMAXPROCS, r.NumCPU, r.CPU)
	fmt.Fprintf(w, "- Connection: %s; %d-byte JSON body; concurrency %d; %s measured after %s warmup per round; targets alternate, medians over rounds\n",
		r.Connection, r.BodyBytes, r.Concurrency, r.Duration, r.Warmup)
	fmt.Fprintf(w, "- %s\n", r.Note)
}

// cpuModel reads the CPU model name from /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
