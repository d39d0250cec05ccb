// Command berth is the berth node daemon (berth serve) and its CLI.
package main

import (
	"os"

	"github.com/berthhq/berth/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
