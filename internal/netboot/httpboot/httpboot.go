// Package httpboot serves network boot over HTTP: kernels, initrds and root
// images from a directory (with range requests, for iPXE and UEFI HTTP
// boot), and iPXE scripts generated per host from its kernel, initrd,
// command line and root.
//
// Contract with the netboot service, which owns the host database and the
// listener:
//
//	h, err := httpboot.New(httpboot.Config{Root: dir, Lookup: hosts.ByMAC, Log: log})
//	srv := &http.Server{Handler: h}            // on the configured address only
//	h.Stats()                                  // requests, scripts, files, bytes, …
//
// Routes:
//
//	GET /boot.ipxe                 chain script: iPXE fetches /ipxe/${net0/mac}.ipxe
//	GET /boot.ipxe?mac=MAC         the host's script
//	GET /ipxe/MAC.ipxe             the host's script (MAC as aa:bb:…, aa-bb-… or aabb…)
//	GET /PATH                      a file under Root (HEAD and Range supported)
//
// Paths are opened through os.Root: "..", symbolic links out of Root and
// NUL bytes are refused (403), logged and counted; directories are not
// listed. The package knows nothing of DHCP or of how hosts are stored.
package httpboot

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Host is what a generated iPXE script boots.
type Host struct {
	// MAC identifies the host.
	MAC net.HardwareAddr
	// Name is the host name, shown in the script and the log.
	Name string
	// Kernel and Initrd are paths under Config.Root or absolute http(s)
	// URLs. Initrds lists further initrds, loaded after Initrd.
	Kernel, Initrd string
	Initrds        []string
	// Cmdline is the kernel command line.
	Cmdline string
	// Root, when set and Cmdline has no root= of its own, is appended as
	// root=ROOT (for a diskless root, the transport's root argument).
	Root string
	// Script, when set, is served verbatim instead of a generated script
	// (it must start with #!ipxe).
	Script string
}

// Validate reports fields that cannot go into an iPXE script: line breaks
// would let a host's command line inject script commands.
func (h Host) Validate() error {
	for name, v := range map[string]string{"name": h.Name, "kernel": h.Kernel, "initrd": h.Initrd, "cmdline": h.Cmdline, "root": h.Root} {
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("host %s: %s contains a line break or NUL; put it on one line", h.MAC, name)
		}
	}
	for _, v := range h.Initrds {
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("host %s: initrd %q contains a line break or NUL", h.MAC, v)
		}
	}
	if h.Script == "" && h.Kernel == "" {
		return fmt.Errorf("host %s: no kernel to boot: set a kernel (or a script)", h.MAC)
	}
	if h.Script != "" && !strings.HasPrefix(h.Script, "#!ipxe") {
		return fmt.Errorf("host %s: script must start with #!ipxe", h.MAC)
	}
	return nil
}

// Config configures a Handler.
type Config struct {
	// Root is the directory of boot files (kernels, initrds, root images).
	Root string
	// Lookup finds the host for a MAC address.
	Lookup func(mac net.HardwareAddr) (Host, bool)
	// BaseURL returns the URL prefix under which this handler is reached
	// by the client (no trailing slash); nil means "http://" + r.Host.
	BaseURL func(r *http.Request) string
	// Log receives one line per script and per refused path; nil discards.
	Log *slog.Logger
}

// Stats are a Handler's counters since it was created.
type Stats struct {
	Requests      uint64 `json:"requests"`       // HTTP requests
	Scripts       uint64 `json:"scripts"`        // iPXE scripts served for known hosts
	UnknownHosts  uint64 `json:"unknown_hosts"`  // script requests for MACs with no host
	Files         uint64 `json:"files"`          // file responses (200 and 206)
	RangeRequests uint64 `json:"range_requests"` // file requests with a Range header
	Bytes         uint64 `json:"bytes"`          // response body bytes written
	NotFound      uint64 `json:"not_found"`      // 404 answers for files
	Refused       uint64 `json:"refused"`        // paths refused as escapes from Root
}

// Handler is the HTTP boot handler.
type Handler struct {
	cfg  Config
	root *os.Root
	log  *slog.Logger
	mux  *http.ServeMux

	requests, scripts, unknown, files, ranges, bytes, notFound, refused atomic.Uint64
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Root == "" {
		return nil, errors.New("httpboot: Root is empty: name the directory of boot files")
	}
	if fi, err := os.Stat(cfg.Root); err != nil {
		return nil, fmt.Errorf("httpboot: root: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("httpboot: root %q is not a directory", cfg.Root)
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("httpboot: open root: %w", err)
	}
	if cfg.Lookup == nil {
		cfg.Lookup = func(net.HardwareAddr) (Host, bool) { return Host{}, false }
	}
	if cfg.BaseURL == nil {
		cfg.BaseURL = func(r *http.Request) string { return "http://" + r.Host }
	}
	h := &Handler{cfg: cfg, root: root, log: cfg.Log}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("GET /boot.ipxe", h.boot)
	h.mux.HandleFunc("GET /ipxe/{file}", h.script)
	h.mux.HandleFunc("GET /", h.file)
	return h, nil
}

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats {
	return Stats{
		Requests: h.requests.Load(), Scripts: h.scripts.Load(), UnknownHosts: h.unknown.Load(),
		Files: h.files.Load(), RangeRequests: h.ranges.Load(), Bytes: h.bytes.Load(),
		NotFound: h.notFound.Load(), Refused: h.refused.Load(),
	}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	cw := &countingWriter{ResponseWriter: w}
	// Check before the mux, which would clean ".." away into a redirect.
	if p := r.URL.Path; strings.IndexByte(p, 0) >= 0 || hasDotDot(p) || hasDotDot(r.URL.RawPath) {
		h.refuse(cw, r, p)
		h.bytes.Add(cw.n)
		return
	}
	h.mux.ServeHTTP(cw, r)
	h.bytes.Add(cw.n)
}

type countingWriter struct {
	http.ResponseWriter
	n uint64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += uint64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// boot answers /boot.ipxe: the host's script with ?mac=, otherwise a chain
// script that makes iPXE ask for its own MAC's script.
func (h *Handler) boot(w http.ResponseWriter, r *http.Request) {
	if m := r.URL.Query().Get("mac"); m != "" {
		h.serveScript(w, r, m)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "#!ipxe\n# berth: fetch this machine's own boot script\nchain %s/ipxe/${netX/mac:hexhyp}.ipxe\n", h.cfg.BaseURL(r))
}

func (h *Handler) script(w http.ResponseWriter, r *http.Request) {
	f := r.PathValue("file")
	m, ok := strings.CutSuffix(f, ".ipxe")
	if !ok {
		http.Error(w, "ask for /ipxe/MAC.ipxe", http.StatusNotFound)
		return
	}
	h.serveScript(w, r, m)
}

// ParseMAC accepts aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff and aabbccddeeff.
func ParseMAC(s string) (net.HardwareAddr, error) {
	if len(s) == 12 && !strings.ContainsAny(s, ":-.") {
		var b strings.Builder
		for i := 0; i < 12; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(s[i : i+2])
		}
		s = b.String()
	}
	mac, err := net.ParseMAC(strings.ReplaceAll(s, "-", ":"))
	if err != nil {
		return nil, fmt.Errorf("%q is not a MAC address (want aa:bb:cc:dd:ee:ff)", s)
	}
	return mac, nil
}

func (h *Handler) serveScript(w http.ResponseWriter, r *http.Request, m string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	mac, err := ParseMAC(m)
	if err != nil {
		http.Error(w, "#!ipxe\necho berth: "+err.Error()+"\nexit 1", http.StatusBadRequest)
		return
	}
	host, ok := h.cfg.Lookup(mac)
	if !ok {
		h.unknown.Add(1)
		h.log.Info("httpboot: no host for MAC", "mac", mac.String(), "remote", r.RemoteAddr)
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, "#!ipxe\necho berth: no network boot host for %s; add one with berth netboot host add\nexit 1\n", mac)
		return
	}
	if host.MAC == nil {
		host.MAC = mac
	}
	s, err := Script(host, h.cfg.BaseURL(r))
	if err != nil {
		h.log.Warn("httpboot: cannot make a script", "mac", mac.String(), "host", host.Name, "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "#!ipxe\necho berth: %s\nexit 1\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	h.scripts.Add(1)
	h.log.Info("httpboot: boot script", "mac", mac.String(), "host", host.Name, "remote", r.RemoteAddr, "kernel", host.Kernel)
	_, _ = w.Write([]byte(s))
}

// Script generates the iPXE script that boots host, with relative kernel
// and initrd paths resolved against base (the handler's URL prefix).
func Script(host Host, base string) (string, error) {
	if err := host.Validate(); err != nil {
		return "", err
	}
	if host.Script != "" {
		return host.Script, nil
	}
	ref := func(p string) string {
		if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
			return p
		}
		return strings.TrimSuffix(base, "/") + "/" + (&url.URL{Path: strings.TrimLeft(p, "/")}).EscapedPath()
	}
	cmdline := host.Cmdline
	if host.Root != "" && !hasArg(cmdline, "root") {
		cmdline = strings.TrimSpace(cmdline + " root=" + host.Root)
	}
	var initrds []string
	if host.Initrd != "" {
		initrds = append(initrds, host.Initrd)
	}
	initrds = append(initrds, host.Initrds...)
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "# berth: network boot of %s (%s)\n", orDash(host.Name), host.MAC)
	if host.Name != "" {
		fmt.Fprintf(&b, "echo berth: booting %s\n", host.Name)
	}
	// Named initrds with initrd=NAME on the command line work with both
	// BIOS and UEFI iPXE (an EFI-stub kernel finds them by name).
	names := make([]string, len(initrds))
	for i := range initrds {
		names[i] = "initrd"
		if i > 0 {
			names[i] = fmt.Sprintf("initrd%d", i)
		}
	}
	fmt.Fprintf(&b, "kernel %s", ref(host.Kernel))
	for _, n := range names {
		fmt.Fprintf(&b, " initrd=%s", n)
	}
	if cmdline != "" {
		// iPXE expands ${…} in commands; a literal "${" in a command line
		// is kept by escaping nothing else: hosts may use iPXE settings
		// such as ${ip} on purpose.
		fmt.Fprintf(&b, " %s", cmdline)
	}
	b.WriteString(" || goto failed\n")
	for i, p := range initrds {
		fmt.Fprintf(&b, "initrd --name %s %s || goto failed\n", names[i], ref(p))
	}
	b.WriteString("boot || goto failed\n")
	b.WriteString(":failed\n")
	fmt.Fprintf(&b, "echo berth: boot of %s failed; retrying in 10 seconds\n", orDash(host.Name))
	b.WriteString("sleep 10\nreboot\n")
	return b.String(), nil
}

func hasArg(cmdline, name string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == name || strings.HasPrefix(f, name+"=") {
			return true
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// file serves a file under Root.
func (h *Handler) file(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		h.notFound.Add(1)
		http.Error(w, "no file named; ask for a path under the boot directory", http.StatusNotFound)
		return
	}
	f, err := h.root.Open(filepath.FromSlash(rel))
	if err != nil {
		if strings.Contains(err.Error(), "escapes") {
			h.refuse(w, r, p)
			return
		}
		if errors.Is(err, fs.ErrNotExist) {
			h.notFound.Add(1)
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		h.log.Warn("httpboot: open", "path", rel, "err", err)
		http.Error(w, "cannot open file", http.StatusForbidden)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		h.notFound.Add(1)
		http.Error(w, "not a file", http.StatusNotFound)
		return
	}
	if r.Header.Get("Range") != "" {
		h.ranges.Add(1)
	}
	switch strings.ToLower(path.Ext(rel)) {
	case ".efi":
		w.Header().Set("Content-Type", "application/efi")
	case ".ipxe":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	case "":
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	h.files.Add(1)
	http.ServeContent(w, r, fi.Name(), fi.ModTime().Truncate(time.Second), f)
}

func hasDotDot(p string) bool {
	for _, part := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return true
		}
	}
	return false
}

func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, p string) {
	h.refused.Add(1)
	h.log.Warn("httpboot: refused path", "path", p, "remote", r.RemoteAddr)
	http.Error(w, "the path leaves the boot directory", http.StatusForbidden)
}
