package hostnet

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnifiedDiff checks the diff with patch(1): applying it to the old
// text must give the new text.
func TestUnifiedDiff(t *testing.T) {
	if _, err := exec.LookPath("patch"); err != nil {
		t.Skip("patch(1) not installed")
	}
	old := readSeed(t, "nat")
	for name, neu := range map[string]string{
		"change":  strings.Replace(old, "10.10.10.1/24", "10.10.20.1/24", 1),
		"append":  old + "\nauto vmbr1\niface vmbr1 inet manual\n\tbridge-ports none\n",
		"prepend": "# managed by berth\n" + old,
		"remove":  strings.Replace(old, "        bridge-fd 0\n", "", 1),
		"both":    "# top\n" + strings.Replace(old, "eno1", "eno2", -1) + "# end",
		"empty":   "",
	} {
		t.Run(name, func(t *testing.T) {
			d := UnifiedDiff("interfaces", "interfaces.new", []byte(old), []byte(neu))
			dir := t.TempDir()
			f := filepath.Join(dir, "interfaces")
			os.WriteFile(f, []byte(old), 0o644)
			cmd := exec.Command("patch", "-s", f)
			cmd.Stdin = strings.NewReader(d)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("patch: %v %s\ndiff:\n%s", err, out, d)
			}
			got, _ := os.ReadFile(f)
			if string(got) != neu {
				t.Fatalf("patched file differs:\n%q\nwant\n%q\ndiff:\n%s", got, neu, d)
			}
		})
	}
	if d := UnifiedDiff("a", "b", []byte("x\n"), []byte("x\n")); d != "" {
		t.Errorf("diff of equal texts = %q", d)
	}
}
