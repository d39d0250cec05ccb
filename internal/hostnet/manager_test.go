package hostnet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ifupdown"
	"github.com/berthhq/berth/internal/store"
)

// TestStaging drives the Manager's staging on a temp file: edits go to
// interfaces.new, the active file stays byte for byte, digests guard
// against lost updates, hand edits are detected, revert drops the stage.
// (Apply needs root and runs in netns_test.go and the CLI script.)
func TestStaging(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	path := filepath.Join(dir, "interfaces")
	orig := "# keep me\nauto lo\niface lo inet loopback\n\nauto vmbr0\niface vmbr0 inet static\n    address 192.0.2.2/24\n    bridge-ports none\n    x-unknown keep\n"
	os.WriteFile(path, []byte(orig), 0o644)
	m := New(Options{Interfaces: path, Store: st})
	ctx := context.Background()

	nc, err := m.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if nc.Changes || nc.Digest != Digest([]byte(orig)) || len(nc.Interfaces) != 2 || nc.Interfaces[1].Type != "bridge" {
		t.Fatalf("initial view %+v", nc)
	}
	mtu := wire.NetworkInterfaceSpec{MTU: 9000}
	nc, err = m.Edit(ctx, nc.Digest, EditFunc("vmbr0", mtu, false))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Fatal("the active file changed while staging")
	}
	staged, _ := os.ReadFile(path + ".new")
	if want := orig + "    mtu 9000\n"; string(staged) != want {
		t.Fatalf("staged file:\n%s\nwant:\n%s", staged, want)
	}
	if !nc.Changes || nc.StagedDigest != Digest(staged) {
		t.Fatalf("view after edit %+v", nc)
	}
	d, err := m.Diff(ctx)
	if err != nil || !strings.Contains(d, "\n+    mtu 9000\n") {
		t.Fatalf("diff %q %v", d, err)
	}

	// A stale digest (the active file's, now that something is staged).
	if _, err := m.Edit(ctx, Digest([]byte(orig)), EditFunc("vmbr0", mtu, false)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale digest: %v", err)
	}
	// Validation names the line and changes nothing.
	ports := []string{"eno9"}
	_, err = m.Edit(ctx, "", EditFunc("vmbr1", wire.NetworkInterfaceSpec{BridgePorts: &ports}, true))
	var ve *ifupdown.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "bridge port eno9 does not exist") {
		t.Fatalf("invalid edit: %v", err)
	}
	if b, _ := os.ReadFile(path + ".new"); string(b) != string(staged) {
		t.Fatal("a refused edit changed the staged file")
	}
	// Adding an existing interface, editing a missing one.
	if _, err := m.Edit(ctx, "", EditFunc("vmbr0", wire.NetworkInterfaceSpec{}, true)); !errors.Is(err, store.ErrExists) {
		t.Errorf("add existing: %v", err)
	}
	if _, err := m.Edit(ctx, "", EditFunc("vmbr7", mtu, false)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("set missing: %v", err)
	}
	if _, err := m.Edit(ctx, "", EditFunc("vmbr0", wire.NetworkInterfaceSpec{Address: []string{"192.0.2.300/24"}}, false)); err == nil || !strings.Contains(err.Error(), "CIDR") {
		t.Errorf("bad address: %v", err)
	}

	// A hand edit of the active file after staging is detected.
	os.WriteFile(path, []byte(orig+"# hand edit\n"), 0o644)
	if nc, _ = m.Get(ctx); !nc.Stale {
		t.Error("hand edit not detected")
	}
	if _, err := m.Apply(ctx, "root@pam", wire.NetworkApplyRequest{}, 0); err == nil || !strings.Contains(err.Error(), "edited by hand") {
		t.Errorf("apply after hand edit: %v", err)
	}

	// Undoing the only change unstages; revert drops a stage.
	if err := m.Revert(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".new"); !os.IsNotExist(err) {
		t.Fatal("interfaces.new survived revert")
	}
	if err := m.Revert(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second revert: %v", err)
	}
	if _, err := m.Edit(ctx, "", EditFunc("vmbr0", mtu, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Edit(ctx, "", EditFunc("vmbr0", wire.NetworkInterfaceSpec{Delete: []string{"mtu"}}, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".new"); !os.IsNotExist(err) {
		t.Error("a stage equal to the active file was kept")
	}
}

// TestNoFile: a host without /etc/network/interfaces shows an empty
// configuration and stages a first interface.
func TestNoFile(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	path := filepath.Join(dir, "etc", "network", "interfaces")
	m := New(Options{Interfaces: path, Store: st})
	ctx := context.Background()
	nc, err := m.Get(ctx)
	if err != nil || len(nc.Interfaces) != 0 || nc.Changes {
		t.Fatalf("Get = %+v, %v", nc, err)
	}
	if d, err := m.Diff(ctx); d != "" || err != nil {
		t.Fatalf("Diff = %q, %v", d, err)
	}
	ports := []string{}
	if _, err := m.Edit(ctx, nc.Digest, EditFunc("vmbr0", wire.NetworkInterfaceSpec{BridgePorts: &ports, Address: []string{"10.1.0.1/24"}}, true)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path + ".new")
	if err != nil {
		t.Fatal(err)
	}
	want := "auto vmbr0\niface vmbr0 inet static\n\taddress 10.1.0.1/24\n\tbridge-ports none\n\tbridge-stp off\n\tbridge-fd 0\n"
	if string(b) != want {
		t.Errorf("staged:\n%s\nwant:\n%s", b, want)
	}
}
