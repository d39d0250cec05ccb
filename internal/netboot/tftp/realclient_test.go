package tftp

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// needTool finds a real client. With BERTH_TEST_ROOT=1 (make test, which
// installs deps/netboot-tftp.debs) a missing tool is a failure, otherwise
// the test skips and says why.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("BERTH_TEST_ROOT") == "1" {
			t.Fatalf("%s not found: install Debian's %s (make deps)", name, pkg)
		}
		t.Skipf("%s not found: install Debian's %s, or run make test", name, pkg)
	}
	return p
}

// TestRealClients downloads with tftp-hpa's tftp, atftp and curl, the
// clients PXE setups are debugged with, at each block and window size.
func TestRealClients(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(3<<20 + 77)
	writeFile(t, filepath.Join(dir, "boot", "vmlinuz"), data)
	srv, addr := startServer(t, Config{Root: dir})
	port := strconv.Itoa(addr.Port)
	out := t.TempDir()

	type run struct {
		name string
		cmd  func(dst string) *exec.Cmd
	}
	var runs []run
	tftpHPA := needTool(t, "tftp", "tftp-hpa")
	runs = append(runs, run{"tftp-hpa", func(dst string) *exec.Cmd {
		return exec.Command(tftpHPA, "127.0.0.1", port, "-m", "binary", "-c", "get", "boot/vmlinuz", dst)
	}})
	atftp := needTool(t, "atftp", "atftp")
	for _, o := range [][]string{{"blksize 512"}, {"blksize 1468"}, {"blksize 65464"}, {"blksize 1468", "windowsize 64"}, {"blksize 65464", "windowsize 8"}, {"tsize 0", "timeout 2"}} {
		args := []string{}
		for _, x := range o {
			args = append(args, "--option", x)
		}
		runs = append(runs, run{"atftp " + strings.Join(o, ","), func(dst string) *exec.Cmd {
			return exec.Command(atftp, append(args, "-g", "-r", "/boot/vmlinuz", "-l", dst, "127.0.0.1", port)...)
		}})
	}
	curl := needTool(t, "curl", "curl")
	runs = append(runs, run{"curl blksize 65464", func(dst string) *exec.Cmd {
		return exec.Command(curl, "-sS", "--tftp-blksize", "65464", "-o", dst, "tftp://127.0.0.1:"+port+"/boot/vmlinuz")
	}})
	for i, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			dst := filepath.Join(out, strconv.Itoa(i))
			cmd := r.cmd(dst)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", cmd.Args, err, b)
			}
			got, err := os.ReadFile(dst)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("downloaded %d bytes (%v), want the %d-byte file", len(got), err, len(data))
			}
		})
	}

	// Errors reach the real client: a refused escape and a write.
	dst := filepath.Join(out, "escape")
	if b, err := exec.Command(tftpHPA, "127.0.0.1", port, "-m", "binary", "-c", "get", "../../etc/passwd", dst).CombinedOutput(); !strings.Contains(string(b), "Error code 2") {
		t.Errorf("tftp-hpa get ../../etc/passwd: %v, %s; want error code 2", err, b)
	}
	src := filepath.Join(out, "upload")
	writeFile(t, src, []byte("x"))
	if b, err := exec.Command(tftpHPA, "127.0.0.1", port, "-m", "binary", "-c", "put", src, "upload").CombinedOutput(); !strings.Contains(string(b), "Error code 2") {
		t.Errorf("tftp-hpa put: %v, %s; want error code 2", err, b)
	}
	waitIdle(t, srv)
	st := srv.Stats()
	if st.TransfersOK != uint64(len(runs)) || st.Refused != 1 || st.WriteRequests != 1 {
		t.Errorf("stats = %+v, want %d good transfers, 1 refused, 1 write", st, len(runs))
	}
}
