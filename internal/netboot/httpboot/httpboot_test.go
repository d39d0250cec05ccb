package httpboot

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berthhq/berth/internal/syncbuf"
)

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

func TestScript(t *testing.T) {
	tests := []struct {
		name string
		host Host
		want string
	}{
		{"kernel initrd root", Host{MAC: testMAC, Name: "node1", Kernel: "debian/vmlinuz", Initrd: "debian/initrd.img",
			Cmdline: "console=ttyS0 quiet", Root: "/dev/nbd0"}, `#!ipxe
# berth: network boot of node1 (52:54:00:12:34:56)
echo berth: booting node1
kernel http://10.0.0.1:8080/debian/vmlinuz initrd=initrd console=ttyS0 quiet root=/dev/nbd0 || goto failed
initrd --name initrd http://10.0.0.1:8080/debian/initrd.img || goto failed
boot || goto failed
:failed
echo berth: boot of node1 failed; retrying in 10 seconds
sleep 10
reboot
`},
		{"own root wins, absolute URL, extra initrd, escaping", Host{MAC: testMAC, Kernel: "https://mirror/k", Initrd: "a b/i",
			Initrds: []string{"/extra.cpio"}, Cmdline: "root=/dev/sda1", Root: "/dev/nbd0"}, `#!ipxe
# berth: network boot of - (52:54:00:12:34:56)
kernel https://mirror/k initrd=initrd initrd=initrd1 root=/dev/sda1 || goto failed
initrd --name initrd http://10.0.0.1:8080/a%20b/i || goto failed
initrd --name initrd1 http://10.0.0.1:8080/extra.cpio || goto failed
boot || goto failed
:failed
echo berth: boot of - failed; retrying in 10 seconds
sleep 10
reboot
`},
		{"literal script", Host{MAC: testMAC, Script: "#!ipxe\nsanboot http://x/disk.iso\n"}, "#!ipxe\nsanboot http://x/disk.iso\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Script(tt.host, "http://10.0.0.1:8080/")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("script mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestScriptRejectsInjection(t *testing.T) {
	for _, h := range []Host{
		{MAC: testMAC, Kernel: "k", Cmdline: "quiet\nshell"},
		{MAC: testMAC, Kernel: "k\r\nshell"},
		{MAC: testMAC, Kernel: "k", Initrds: []string{"x\nshell"}},
		{MAC: testMAC},
		{MAC: testMAC, Script: "echo hi"},
	} {
		if s, err := Script(h, "http://x"); err == nil {
			t.Errorf("Script(%+v) = %q, want an error", h, s)
		}
	}
}

func TestParseMAC(t *testing.T) {
	for _, s := range []string{"52:54:00:12:34:56", "52-54-00-12-34-56", "525400123456", "52:54:00:12:34:56"} {
		m, err := ParseMAC(s)
		if err != nil || m.String() != testMAC.String() {
			t.Errorf("ParseMAC(%q) = %v, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "zz:54:00:12:34:56", "5254001234", "52:54:00:12:34:56:78:90:ab"} {
		if m, err := ParseMAC(s); err == nil && len(m) == 6 {
			t.Errorf("ParseMAC(%q) = %v, want an error", s, m)
		}
	}
}

type fixture struct {
	h    *Handler
	srv  *httptest.Server
	data []byte
	logs *syncbuf.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "boot")
	data := make([]byte, 3<<20+5)
	rand.Read(data)
	for name, b := range map[string][]byte{"debian/vmlinuz": data, "debian/initrd.img": []byte("initrd"), "ipxe.efi": []byte("MZ")} {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(base, "secret"), []byte("secret"), 0o600)
	os.Symlink("../secret", filepath.Join(root, "out"))
	logs := &syncbuf.Buffer{}
	h, err := New(Config{Root: root, Log: slog.New(slog.NewTextHandler(logs, nil)), Lookup: func(mac net.HardwareAddr) (Host, bool) {
		if mac.String() == testMAC.String() {
			return Host{Name: "node1", Kernel: "debian/vmlinuz", Initrd: "debian/initrd.img", Cmdline: "console=ttyS0"}, true
		}
		return Host{}, false
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{h: h, srv: srv, data: data, logs: logs}
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestHandler(t *testing.T) {
	f := newFixture(t)
	u := f.srv.URL
	resp, body := get(t, u+"/ipxe/52-54-00-12-34-56.ipxe")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "kernel "+u+"/debian/vmlinuz initrd=initrd console=ttyS0") {
		t.Errorf("script: %d\n%s", resp.StatusCode, body)
	}
	resp, body2 := get(t, u+"/boot.ipxe?mac=52:54:00:12:34:56")
	if resp.StatusCode != 200 || string(body2) != string(body) {
		t.Errorf("boot.ipxe?mac: %d\n%s", resp.StatusCode, body2)
	}
	resp, body = get(t, u+"/boot.ipxe")
	if want := "chain " + u + "/ipxe/${netX/mac:hexhyp}.ipxe"; !strings.Contains(string(body), want) {
		t.Errorf("chain script %q lacks %q", body, want)
	}
	if resp, _ := get(t, u+"/ipxe/aa-bb-cc-dd-ee-ff.ipxe"); resp.StatusCode != 404 {
		t.Errorf("unknown host: %d", resp.StatusCode)
	}
	if resp, _ := get(t, u+"/ipxe/nonsense.ipxe"); resp.StatusCode != 400 {
		t.Errorf("bad MAC: %d", resp.StatusCode)
	}

	resp, body = get(t, u+"/debian/vmlinuz")
	if resp.StatusCode != 200 || !bytes.Equal(body, f.data) || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("file: %d, %d bytes, Accept-Ranges %q", resp.StatusCode, len(body), resp.Header.Get("Accept-Ranges"))
	}
	resp, body = get(t, u+"/debian/vmlinuz", "Range", "bytes=1000-1999")
	if resp.StatusCode != 206 || !bytes.Equal(body, f.data[1000:2000]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(f.data)) {
		t.Errorf("range: %d, %d bytes, %q", resp.StatusCode, len(body), resp.Header.Get("Content-Range"))
	}
	if resp, _ := get(t, u+"/ipxe.efi"); resp.Header.Get("Content-Type") != "application/efi" {
		t.Errorf("efi content type %q", resp.Header.Get("Content-Type"))
	}
	for _, p := range []string{"/missing", "/debian", "/"} {
		if resp, _ := get(t, u+p); resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", p, resp.StatusCode)
		}
	}
	st := f.h.Stats()
	if st.Scripts != 2 || st.UnknownHosts != 1 || st.RangeRequests != 1 || st.Bytes < uint64(len(f.data)+1000) || st.Refused != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// TestEscapes sends raw request lines (clients would clean them) so the
// handler sees the escape attempts themselves.
func TestEscapes(t *testing.T) {
	f := newFixture(t)
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	for _, p := range []string{"/../secret", "/debian/../../secret", "/%2e%2e/secret", "/debian/%2E%2E/%2e%2e/secret", "/out", `/..\secret`, "/a%00b"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", p)
		b, _ := io.ReadAll(c)
		c.Close()
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 403")) && !bytes.HasPrefix(b, []byte("HTTP/1.1 400")) {
			t.Errorf("%s: %s", p, bytes.SplitN(b, []byte("\r\n"), 2)[0])
		}
		if bytes.Contains(b, []byte("secret\n")) || bytes.HasSuffix(b, []byte("secret")) {
			t.Errorf("%s leaked the secret", p)
		}
	}
	if st := f.h.Stats(); st.Refused < 6 {
		t.Errorf("refused = %d, want ≥ 6", st.Refused)
	}
	if !strings.Contains(f.logs.String(), "refused path") {
		t.Errorf("refusals not logged:\n%s", f.logs.String())
	}
}

// TestCurl uses a real client for ranges and resumption, as firmware and
// iPXE do.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("BERTH_TEST_ROOT") == "1" {
			t.Fatal("curl not found: make deps installs it")
		}
		t.Skip("curl not found")
	}
	f := newFixture(t)
	dst := filepath.Join(t.TempDir(), "k")
	os.WriteFile(dst, f.data[:1<<20], 0o644) // a partial download to resume
	if b, err := exec.Command(curl, "-sSf", "-C", "-", "-o", dst, f.srv.URL+"/debian/vmlinuz").CombinedOutput(); err != nil {
		t.Fatalf("curl: %v %s", err, b)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, f.data) {
		t.Errorf("resumed download differs (%d bytes)", len(got))
	}
	if st := f.h.Stats(); st.RangeRequests != 1 {
		t.Errorf("range requests = %d, want 1", st.RangeRequests)
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"52:54:00:12:34:56", "525400123456", "52-54-00-12-34-56", "::::::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMAC(s)
		if err == nil && len(m) == 0 {
			t.Fatalf("ParseMAC(%q) gave an empty address", s)
		}
	})
}

// FuzzHandlerPath requests arbitrary paths: nothing outside the root is
// ever served, and nothing panics.
func FuzzHandlerPath(f *testing.F) {
	for _, s := range []string{"/debian/vmlinuz", "/../secret", "/out", "/ipxe/52-54-00-12-34-56.ipxe", "/boot.ipxe?mac=x"} {
		f.Add(s)
	}
	base := f.TempDir()
	root := filepath.Join(base, "boot")
	os.MkdirAll(root, 0o755)
	os.WriteFile(filepath.Join(root, "ok"), []byte("ok"), 0o644)
	os.WriteFile(filepath.Join(base, "secret"), []byte("TOPSECRET"), 0o644)
	os.Symlink("../secret", filepath.Join(root, "out"))
	h, err := New(Config{Root: root})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p string) {
		req, err := http.NewRequest("GET", "http://x"+p, nil)
		if err != nil || !strings.HasPrefix(req.URL.Path, "/") {
			return
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if strings.Contains(w.Body.String(), "TOPSECRET") {
			t.Fatalf("%q served a file outside the root", p)
		}
	})
}
