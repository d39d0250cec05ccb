// Package cttest provides what container tests and benchmarks share: a
// busybox image whose init idles quietly (an /etc/inittab without
// respawning shells), imported into a real image store, and the switch that
// lets a test binary serve as berth's minimal container init (for images
// without one). It is for tests and benchmarks only.
package cttest

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/berthhq/berth/internal/ctinit"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/image/imagetest"
)

// Inittab makes busybox init run nothing but wait: no console shells to
// respawn, clean poweroff on SIGUSR2, reboot on SIGTERM.
const Inittab = "::sysinit:/bin/true\n"

// BusyboxEntries is imagetest's busybox root plus Inittab.
func BusyboxEntries() ([]imagetest.Entry, error) {
	es, err := imagetest.BusyboxEntries(imagetest.BusyboxPath)
	if err != nil {
		return nil, err
	}
	return append(es, imagetest.Entry{Name: "etc/inittab", Body: Inittab, Type: tar.TypeReg, Mode: 0o644}), nil
}

// WriteBusyboxTar writes the idle busybox root as a tarball into dir.
func WriteBusyboxTar(dir string) (string, error) {
	es, err := BusyboxEntries()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "busybox-idle.tar")
	return p, imagetest.WriteTarFile(p, es)
}

// ImportBusybox imports the idle busybox image into s as name.
func ImportBusybox(ctx context.Context, s *image.Store, name, tmp string) error {
	tarPath, err := WriteBusyboxTar(tmp)
	if err != nil {
		return err
	}
	if _, err := s.Import(ctx, name, tarPath, discard{}); err != nil {
		return fmt.Errorf("import busybox image: %w", err)
	}
	return nil
}

type discard struct{}

func (discard) Printf(string, ...any) {}

// Helper runs the minimal init (ctinit.MiniInitMode) when os.Args[1]
// names it; call it first in TestMain so the test binary can be the
// driver's Self.
func Helper() {
	if len(os.Args) < 2 {
		return
	}
	if os.Args[1] == ctinit.MiniInitMode {
		ctinit.MiniInit(os.Args[2:])
	}
}

// RequireRoot skips the test unless BERTH_TEST_ROOT=1 and the test runs as
// root, saying why.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Getenv("BERTH_TEST_ROOT") != "1" || os.Geteuid() != 0 {
		t.Skip("needs root and BERTH_TEST_ROOT=1 (make test sets it as root): creates namespaces, cgroups and mounts")
	}
}

// Logger logs task lines through t.
type Logger struct{ T testing.TB }

// Printf logs through the test.
func (l Logger) Printf(format string, args ...any) { l.T.Helper(); l.T.Logf(format, args...) }

var _ io.Writer = (*os.File)(nil)
