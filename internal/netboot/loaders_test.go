package netboot

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	wire "github.com/berthhq/berth/api"
)

func TestProvideLoaders(t *testing.T) {
	src, root := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(src, "undionly.kpxe"), []byte("bios loader"), 0o644)
	os.WriteFile(filepath.Join(src, "ipxe.efi"), []byte("efi loader"), 0o644)
	os.WriteFile(filepath.Join(root, "ipxe.efi"), []byte("the admin's own"), 0o644)
	s := &Service{o: Options{LoaderDir: src}, log: discard()}
	s.provideLoaders(root, wire.NetbootConfig{})
	for name, want := range map[string]string{"undionly.kpxe": "bios loader", "ipxe.efi": "the admin's own"} {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 2 {
		t.Errorf("root holds %d entries (temp files left?)", len(ents))
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
