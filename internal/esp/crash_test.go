package esp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var errInterrupted = errors.New("test: interrupted")

func copyFile(t testing.TB, dst, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkBootable asserts what a firmware and systemd-boot need of an ESP
// after an interruption: a clean FAT (fsck.fat), a loader.conf whose
// default is the wildcard or an existing entry, at least one entry, and
// every entry naming a kernel and initrd whose contents are exactly one
// version's old or new files.
func checkBootable(t *testing.T, p Partition, sources map[string][]string) {
	t.Helper()
	fsck(t, p.DiskPath, p)
	fsys := readESP(t, p)
	lc, err := fsys.ReadFile("loader/loader.conf")
	if err != nil {
		t.Fatalf("loader.conf: %v", err)
	}
	ents, err := fsys.ReadDir("loader/entries")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name, ".conf") {
			continue
		}
		b, err := fsys.ReadFile("loader/entries/" + e.Name)
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		en := ParseEntry(string(b))
		if en.Linux == "" || len(en.Initrd) != 1 {
			t.Fatalf("%s is incomplete: %q", e.Name, b)
		}
		for _, f := range []string{en.Linux, en.Initrd[0]} {
			got, err := fsys.ReadFile(f)
			if err != nil {
				t.Fatalf("%s names %s: %v", e.Name, f, err)
			}
			ok := false
			for _, want := range sources[filepath.Base(f)] {
				ok = ok || string(got) == want
			}
			if !ok {
				t.Fatalf("%s names %s whose %d bytes are neither the old nor the new file", e.Name, f, len(got))
			}
		}
		have[e.Name] = true
	}
	if len(have) == 0 {
		t.Fatal("no loader entries left")
	}
	def := ""
	for _, l := range strings.Split(string(lc), "\n") {
		if v, ok := strings.CutPrefix(l, "default "); ok {
			def = v
		}
	}
	if def != "proxmox-*" && !have[def] {
		t.Fatalf("loader.conf default %q names no entry (have %v)", def, have)
	}
}

// TestRefreshInterrupted stops a refresh before each of its changes to two
// mirrored ESPs in turn (kernel added, kernel removed, initrd regenerated,
// pin changed), checks that both ESPs stay bootable, and that the next
// refresh completes the sync.
func TestRefreshInterrupted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := newESP(t, f, "loop0", 40)
	b := newESP(t, f, "loop1", 40)
	old := []string{"6.1.0-8-amd64", "6.1.0-9-amd64"}
	for _, v := range old {
		f.kernel(t, v, 20000)
	}
	if err := f.tool(t).Refresh(ctx, ""); err != nil {
		t.Fatal(err)
	}
	sources := map[string][]string{}
	remember := func() {
		for _, v := range []string{"6.1.0-8-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64"} {
			for _, n := range []string{"vmlinuz-" + v, "initrd.img-" + v} {
				if data, err := os.ReadFile(f.root + "/boot/" + n); err == nil {
					sources[n] = append(sources[n], string(data))
				}
			}
		}
	}
	remember()
	base := t.TempDir()
	copyFile(t, base+"/loop0", a.DiskPath)
	copyFile(t, base+"/loop1", b.DiskPath)

	// The change: 6.1.0-10 arrives (6.1.0-8 falls out), 6.1.0-9's initrd
	// is regenerated, and 6.1.0-9 is pinned.
	f.kernel(t, "6.1.0-10-amd64", 20000)
	write(t, f.root+"/boot/initrd.img-6.1.0-9-amd64", "regenerated initrd 6.1.0-9")
	if err := f.tool(t).KernelPin("6.1.0-9-amd64", false); err != nil {
		t.Fatal(err)
	}
	remember()

	var steps []string
	tl := f.tool(t)
	tl.Hook = func(s string) error { steps = append(steps, s); return nil }
	if err := tl.Refresh(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if len(steps) < 20 {
		t.Fatalf("only %d steps: %v", len(steps), steps)
	}
	t.Logf("refresh makes %d changes", len(steps))
	for i := range steps {
		t.Run(fmt.Sprintf("%02d-%s", i+1, strings.ReplaceAll(steps[i], "/", "_")), func(t *testing.T) {
			copyFile(t, a.DiskPath, base+"/loop0")
			copyFile(t, b.DiskPath, base+"/loop1")
			n := 0
			tl := f.tool(t)
			tl.Hook = func(string) error {
				if n++; n > i {
					return errInterrupted
				}
				return nil
			}
			if err := tl.Refresh(ctx, ""); !errors.Is(err, errInterrupted) && !strings.Contains(fmt.Sprint(err), errInterrupted.Error()) {
				t.Fatalf("Refresh = %v, want interrupted", err)
			}
			checkBootable(t, a, sources)
			checkBootable(t, b, sources)
			if err := f.tool(t).Refresh(ctx, ""); err != nil {
				t.Fatalf("refresh after the interruption: %v", err)
			}
			r, err := f.tool(t).Status()
			if err != nil || !r.Healthy() {
				t.Fatalf("not in sync after the follow-up refresh: %+v %v", r, err)
			}
			checkBootable(t, a, sources)
		})
	}
}
