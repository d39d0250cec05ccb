// Command hostnethelper is berth's network apply helper on its own
// (hostnet.RunHelper, what `berth hostnet-helper` runs), small and
// statically linked for the User Mode Linux tests, where building all of
// berth would cost minutes of CI time for no extra coverage.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/berthhq/berth/internal/hostnet"
)

func main() {
	if err := hostnet.RunHelper(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
