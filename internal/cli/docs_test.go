package cli_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/berthhq/berth/internal/cli"
)

var update = flag.Bool("update", false, "rewrite the generated docs in docs/")

// TestGeneratedDocsCurrent checks that docs/cli.md and docs/api/openapi.json
// are what the code generates; run `make docs` (or this test with -update)
// after changing commands or routes.
func TestGeneratedDocsCurrent(t *testing.T) {
	for _, tt := range []struct {
		args []string
		file string
	}{
		{[]string{"docs", "cli"}, "../../docs/cli.md"},
		{[]string{"docs", "openapi"}, "../../docs/api/openapi.json"},
	} {
		var out, errb bytes.Buffer
		if code := cli.Main(tt.args, &out, &errb); code != 0 {
			t.Fatalf("berth %v: exit %d: %s", tt.args, code, errb.String())
		}
		path := filepath.FromSlash(tt.file)
		if *update {
			if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("%s is out of date: run 'make docs' (or go test ./internal/cli -run TestGeneratedDocsCurrent -update)", tt.file)
		}
	}
}
