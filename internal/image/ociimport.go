package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/berthhq/berth/internal/image/oci"
	"github.com/berthhq/berth/internal/image/tarx"
)

// importOCI unpacks an oci-archive into the work dir, resolves the image
// for this machine's architecture and applies its layers in order with
// whiteouts, checking every blob's digest.
func (w *work) importOCI(ctx context.Context, source string, log Logger) error {
	layoutDir := filepath.Join(w.dir, "oci")
	if err := os.Mkdir(layoutDir, 0o700); err != nil {
		return err
	}
	f, err := os.Open(source)
	if err != nil {
		return err
	}
	_, err = tarx.Extract(ctx, f, layoutDir, tarx.Options{})
	f.Close()
	if err != nil {
		return fmt.Errorf("unpack OCI archive: %w", err)
	}
	l, err := oci.Open(layoutDir)
	if err != nil {
		return err
	}
	m, err := l.Resolve(runtime.GOARCH)
	if err != nil {
		return err
	}
	if cfg, err := l.Config(m); err != nil {
		return err
	} else if cfg.Architecture != "" && cfg.Architecture != runtime.GOARCH {
		log.Printf("warning: the image is for %s/%s, this node is %s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	for i, d := range m.Layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		log.Printf("applying layer %d/%d %s (%s, %s)", i+1, len(m.Layers), d.Digest, d.MediaType, humanBytes(d.Size))
		if err := applyLayer(ctx, l, d, w.rootfs()); err != nil {
			return fmt.Errorf("layer %d (%s): %w", i+1, d.Digest, err)
		}
	}
	return os.RemoveAll(layoutDir)
}

func applyLayer(ctx context.Context, l *oci.Layout, d oci.Descriptor, root string) error {
	blob, err := l.OpenBlob(d)
	if err != nil {
		return err
	}
	defer blob.Close()
	r, _, err := Decompress(ctx, blob)
	if err != nil {
		return err
	}
	if _, err := tarx.Extract(ctx, r, root, tarx.Options{Whiteouts: true, Owners: true}); err != nil {
		r.Close()
		return err
	}
	if err := r.Close(); err != nil {
		return err
	}
	return blob.Verify()
}
