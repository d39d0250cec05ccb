package image_test

import (
	"archive/tar"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/image/imagetest"
	"github.com/berthhq/berth/internal/store"
)

type nopLog struct{}

func (nopLog) Printf(string, ...any) {}

// manyFilesTar writes a gzip-compressed root of n small files (0-16 KiB of
// pseudo-random bytes, fixed seed) in 100 directories, plus symlinks.
func manyFilesTar(b *testing.B, dir string, n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	var es []imagetest.Entry
	for d := 0; d < 100; d++ {
		es = append(es, imagetest.Entry{Name: fmt.Sprintf("usr/share/d%03d/", d), Type: tar.TypeDir})
	}
	for i := 0; i < n; i++ {
		body := make([]byte, r.IntN(16<<10))
		for j := range body {
			body[j] = byte('a' + r.IntN(16)) // compressible, like text
		}
		es = append(es, imagetest.Entry{Name: fmt.Sprintf("usr/share/d%03d/f%05d", i%100, i), Body: string(body)})
		if i%10 == 0 {
			es = append(es, imagetest.Entry{Name: fmt.Sprintf("usr/share/d%03d/l%05d", i%100, i), Type: tar.TypeSymlink, Linkname: fmt.Sprintf("f%05d", i)})
		}
	}
	p := filepath.Join(dir, "many.tar")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if err := imagetest.WriteTar(f, es); err != nil {
		b.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("gzip", "-1", "-f", p).CombinedOutput(); err != nil {
		b.Fatalf("gzip: %v %s", err, out)
	}
	return p + ".gz"
}

// BenchmarkImportVsTar imports the same tarballs with berth (safe
// extraction, owners, digest of every file, atomic commit) and with GNU tar
// (tar -xpf as root, nothing else), side by side in each iteration, and
// reports both times and their ratio.
func BenchmarkImportVsTar(b *testing.B) {
	work := b.TempDir()
	sources := map[string]string{
		"busybox":    imagetest.BusyboxTar(b),
		"5000-files": manyFilesTar(b, work, 5000),
	}
	for name, src := range sources {
		b.Run(name, func(b *testing.B) {
			st, err := store.Open(filepath.Join(b.TempDir(), "berth.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			s, err := image.Open(context.Background(), st, filepath.Join(b.TempDir(), "images"), nil)
			if err != nil {
				b.Fatal(err)
			}
			var berthT, tarT time.Duration
			for i := 0; b.Loop(); i++ {
				n := fmt.Sprintf("img%d", i)
				t0 := time.Now()
				if _, err := s.Import(context.Background(), n, src, nopLog{}); err != nil {
					b.Fatal(err)
				}
				berthT += time.Since(t0)
				dst := filepath.Join(work, "tar-"+n)
				os.Mkdir(dst, 0o755)
				t0 = time.Now()
				if out, err := exec.Command("tar", "-xpf", src, "-C", dst).CombinedOutput(); err != nil {
					b.Fatalf("tar: %v %s", err, strings.TrimSpace(string(out)))
				}
				tarT += time.Since(t0)
				b.StopTimer()
				s.Remove(context.Background(), n)
				os.RemoveAll(dst)
				b.StartTimer()
			}
			k := float64(b.N)
			b.ReportMetric(float64(berthT.Milliseconds())/k, "berth-ms/import")
			b.ReportMetric(float64(tarT.Milliseconds())/k, "gnutar-ms/extract")
			b.ReportMetric(float64(berthT)/float64(tarT), "berth/gnutar")
		})
	}
}
