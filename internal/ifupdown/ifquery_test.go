package ifupdown

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ifqueryStanza is one element of `ifquery -o json`.
type ifqueryStanza struct {
	Name   string         `json:"name"`
	Method string         `json:"addr_method"`
	Family string         `json:"addr_family"`
	Auto   bool           `json:"auto"`
	Config map[string]any `json:"config"`
}

// ifquery finds Debian's ifupdown2, unpacked (never installed: installing
// it would take over this host's networking) by make deps, and returns a
// command that runs its ifquery. ifupdown2 finds its own configuration
// next to its code, so the code is copied with it into a temp dir.
func ifquery(t *testing.T) string {
	t.Helper()
	root := os.Getenv("BERTH_IFUPDOWN2")
	if root == "" {
		root = "/var/cache/berth-test/unpacked/ifupdown2"
	}
	if _, err := os.Stat(filepath.Join(root, "usr/share/ifupdown2/__main__.py")); err != nil {
		if os.Getenv("BERTH_TEST_ROOT") == "1" {
			t.Fatalf("ifupdown2 is not unpacked in %s: run make deps", root)
		}
		t.Skipf("ifupdown2 is not unpacked in %s (make deps unpacks it as root)", root)
	}
	py, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skip("python3 is missing (deps/hostnet.debs)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-a", filepath.Join(root, "usr/share/ifupdown2"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy ifupdown2: %v %s", err, out)
	}
	pkg := filepath.Join(dir, "ifupdown2")
	if out, err := exec.Command("mkdir", "-p", filepath.Join(pkg, "etc/network")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := exec.Command("cp", "-a", filepath.Join(root, "etc/network/ifupdown2"), filepath.Join(pkg, "etc/network/")).CombinedOutput(); err != nil {
		t.Fatalf("copy ifupdown2 config: %v %s", err, out)
	}
	// __main__.py checks that it is called as ifquery.
	link := filepath.Join(dir, "bin", "ifquery")
	os.MkdirAll(filepath.Dir(link), 0o755)
	if err := os.Symlink(filepath.Join(pkg, "__main__.py"), link); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ifquery.sh")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nPYTHONPATH="+dir+" exec "+py+" "+link+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// normalize puts a value the way ifupdown2 prints it: words joined by one
// space.
func normalize(v string) string { return strings.Join(strings.Fields(v), " ") }

// berthView renders berth's parse in ifquery's shape: one entry per name
// and family, keys with dashes, $IFACE expanded, repeated keys as lists.
func berthView(c *Config) []ifqueryStanza {
	var out []ifqueryStanza
	idx := map[string]int{}
	for _, i := range c.Ifaces {
		for _, s := range i.Stanzas {
			k := i.Name + "/" + s.Family
			at, ok := idx[k]
			if !ok {
				at = len(out)
				idx[k] = at
				out = append(out, ifqueryStanza{Name: i.Name, Method: s.Method, Family: s.Family, Auto: c.Auto[i.Name], Config: map[string]any{}})
			}
			for _, o := range s.Options() {
				key := strings.ReplaceAll(o.Key, "_", "-")
				val := normalize(strings.ReplaceAll(o.Value, "$IFACE", i.Name))
				switch prev := out[at].Config[key].(type) {
				case nil:
					out[at].Config[key] = val
				case string:
					out[at].Config[key] = []any{prev, val}
				case []any:
					out[at].Config[key] = append(prev, val)
				}
			}
		}
	}
	sortStanzas(out)
	return out
}

func sortStanzas(s []ifqueryStanza) {
	sort.Slice(s, func(a, b int) bool {
		if s[a].Name != s[b].Name {
			return s[a].Name < s[b].Name
		}
		return s[a].Family < s[b].Family
	})
}

// TestIfqueryAgrees parses a corpus with berth and with Debian's ifupdown2
// (ifquery -o json): the same interfaces, methods, auto flags and options.
func TestIfqueryAgrees(t *testing.T) {
	bin := ifquery(t)
	files, _ := filepath.Glob("testdata/seeds/*.interfaces")
	more, _ := filepath.Glob("testdata/ifquery/*.interfaces")
	files = append(files, more...)

	// A main file with includes, written with absolute paths.
	inc := t.TempDir()
	os.MkdirAll(filepath.Join(inc, "interfaces.d"), 0o755)
	os.WriteFile(filepath.Join(inc, "interfaces.d", "vmbr9"), []byte("auto vmbr9\niface vmbr9 inet static\n\taddress 10.99.0.1/24\n\tbridge-ports none\n"), 0o644)
	os.WriteFile(filepath.Join(inc, "interfaces.d", "ignored.bak"), []byte("iface eno9 inet manual\n"), 0o644)
	os.WriteFile(filepath.Join(inc, "extra.cfg"), []byte("iface eno8 inet manual\n\tmtu 9000\n"), 0o644)
	main := filepath.Join(inc, "interfaces")
	// ifupdown2 knows "source" with globs but not ifupdown1's
	// source-directory (TestIncludes covers that one).
	os.WriteFile(main, []byte("auto lo\niface lo inet loopback\nsource "+filepath.Join(inc, "interfaces.d", "vmbr*")+"\nsource "+filepath.Join(inc, "*.cfg")+"\n"), 0o644)
	files = append(files, main)

	if len(files) < 12 {
		t.Fatalf("corpus has only %d files", len(files))
	}
	for _, p := range files {
		t.Run(filepath.Base(p), func(t *testing.T) {
			t.Parallel()
			c, err := Load(OS, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := berthView(c)
			args := append([]string{"-i", p, "-o", "json"}, c.Names()...)
			out, err := exec.Command(bin, args...).Output()
			if err != nil {
				var stderr string
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				t.Fatalf("ifquery: %v\n%s", err, stderr)
			}
			var want []ifqueryStanza
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatalf("ifquery output: %v\n%s", err, out)
			}
			for k := range want {
				for key, v := range want[k].Config {
					if s, ok := v.(string); ok {
						want[k].Config[key] = normalize(s)
					}
				}
			}
			sortStanzas(want)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("berth and ifquery disagree (-ifquery +berth):\n%s", d)
			}
		})
	}
}
