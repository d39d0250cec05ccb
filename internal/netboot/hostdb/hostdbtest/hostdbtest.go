// Package hostdbtest holds the checks the host file importers' fuzz tests
// share: every host returned is valid and every error names a line of the
// input. It is test support only.
package hostdbtest

import (
	"strings"
	"testing"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/netboot/hostdb"
)

// CheckParse fails t if a parser's result for in breaks the importers'
// contract.
func CheckParse(t testing.TB, in string, hosts []wire.NetbootHost, errs []hostdb.LineError) {
	t.Helper()
	for _, h := range hosts {
		if _, err := hostdb.Normalize(h); err != nil {
			t.Fatalf("returned an invalid host: %v", err)
		}
	}
	lines := strings.Count(in, "\n") + 2
	for _, e := range errs {
		if e.Line < 1 || e.Line > lines {
			t.Fatalf("error names line %d of a %d-line input: %v", e.Line, lines, e)
		}
	}
}
