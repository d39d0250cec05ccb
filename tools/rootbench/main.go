// Command rootbench measures a diskless client's sequential read of its
// root from berth's NBD server (internal/netboot/diskless: shared base
// plus the client's copy-on-write layer) beside nfs-ganesha (NFSv4, VFS
// FSAL) serving the same image file, side by side in one run on loopback.
//
// Each protocol is read with its own standard userspace client, since
// this host's kernel has neither an nbd nor (for the test) a matching NFS
// setup: libnbd's nbdcopy and libnfs's nfs-cp, both asked for 1 MiB
// requests one at a time (nbdcopy --synchronous), so neither side gains
// from parallel requests. A second berth row shows nbdcopy's default of 64
// requests in flight, which the kernel's nbd driver also uses.
//
// It is run by `make bench-netboot-root` inside a fresh network namespace
// (unshare -n): ganesha binds the wildcard address there, which is only
// that namespace's loopback.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/berthhq/berth/internal/netboot/diskless"
)

const ganeshaConf = `NFS_CORE_PARAM {
	Protocols = 4;
	Enable_NLM = false;
	Enable_RQUOTA = false;
}
NFSV4 { Graceless = true; }
EXPORT {
	Export_Id = 1;
	Path = %s;
	Pseudo = /export;
	Access_Type = RO;
	Squash = No_Root_Squash;
	Protocols = 4;
	Transports = TCP;
	SecType = sys;
	FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
`

func main() {
	size := flag.Int("size", 256, "root image size in MiB")
	rounds := flag.Int("rounds", 3, "rounds (the two servers alternate)")
	flag.Parse()
	if err := run(*size, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "rootbench:", err)
		os.Exit(1)
	}
}

func run(sizeMiB, rounds int) error {
	for _, tool := range []string{"nbdcopy", "nfs-cp", "ganesha.nfsd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: make deps installs libnbd-bin, libnfs-utils, nfs-ganesha and nfs-ganesha-vfs", tool)
		}
	}
	dir, err := os.MkdirTemp("", "rootbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	export := filepath.Join(dir, "export")
	if err := os.MkdirAll(export, 0o755); err != nil {
		return err
	}
	img := filepath.Join(export, "root.img")
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, int64(sizeMiB)<<20); err != nil {
		return err
	}
	f.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := diskless.New(diskless.Config{ClientsDir: filepath.Join(dir, "clients"),
		Image: func(net.HardwareAddr) (string, bool) { return img, true }, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(ctx, ln)
	nbdURI := "nbd://" + ln.Addr().String() + "/52-54-00-00-00-01"

	conf := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, ganeshaConf, export), 0o644); err != nil {
		return err
	}
	g := exec.Command("ganesha.nfsd", "-F", "-L", filepath.Join(dir, "ganesha.log"), "-f", conf, "-p", filepath.Join(dir, "ganesha.pid"))
	if err := g.Start(); err != nil {
		return err
	}
	defer func() { _ = g.Process.Kill(); _ = g.Wait() }()
	nfsURL := "nfs://127.0.0.1/export/root.img?version=4"
	// nfs-cp can only write a regular file: put it in memory (tmpfs), so
	// no disk write is timed.
	shm, err := os.MkdirTemp("/dev/shm", "rootbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(shm)
	dst := filepath.Join(shm, "copy")

	type target struct {
		name string
		cmd  func() *exec.Cmd
	}
	targets := []target{
		{"berth NBD (nbdcopy, 1 × 1 MiB requests)", func() *exec.Cmd {
			return exec.Command("nbdcopy", "--synchronous", "--request-size=1048576", "--no-extents", nbdURI, "null:")
		}},
		{"nfs-ganesha NFSv4 (nfs-cp)", func() *exec.Cmd { return exec.Command("nfs-cp", nfsURL, dst) }},
		{"berth NBD (nbdcopy default, 64 requests in flight)", func() *exec.Cmd {
			return exec.Command("nbdcopy", "--no-extents", nbdURI, "null:")
		}},
	}
	// Wait for ganesha (its start takes a few seconds).
	var last error
	for i := 0; i < 60; i++ {
		if last = exec.Command("nfs-cp", nfsURL, dst).Run(); last == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if last != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "ganesha.log"))
		return fmt.Errorf("nfs-ganesha did not serve the image: %v\n%s", last, tail(string(b)))
	}
	results := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		order := slices.Clone(targets)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			os.Remove(dst)
			cmd := t.cmd()
			start := time.Now()
			out, err := cmd.CombinedOutput()
			d := time.Since(start)
			if err != nil {
				return fmt.Errorf("%s: %v: %s", t.name, err, out)
			}
			results[t.name] = append(results[t.name], float64(int64(sizeMiB)<<20)/d.Seconds()/1e6)
		}
	}
	fmt.Printf("Sequential read of a %d MiB root image, %d rounds (alternating order), MB/s = 10^6 bytes/s, median:\n\n", sizeMiB, rounds)
	fmt.Println("| server (client) | MB/s |")
	fmt.Println("|---|---:|")
	med := map[string]float64{}
	for _, t := range targets {
		v := slices.Clone(results[t.name])
		slices.Sort(v)
		med[t.name] = v[len(v)/2]
		fmt.Printf("| %s | %.1f |\n", t.name, med[t.name])
	}
	fmt.Printf("\n**berth / nfs-ganesha at one request at a time: %.2f×**\n", med[targets[0].name]/med[targets[1].name])
	st := srv.Stats()
	fmt.Printf("\nberth counters: %d exports, %d bytes read, %d errors.\n", st.Exports, st.BytesRead, st.Errors)
	return nil
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}
