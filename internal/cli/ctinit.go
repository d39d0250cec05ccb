package cli

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/berthhq/berth/internal/ctinit"
	"github.com/berthhq/berth/internal/guest/container"
)

// ctHelperCmds are the hidden modes the container driver re-executes berth
// in: the init helper (inside a new container's namespaces, replaced by
// the container's init), the exec helper (host side, joins cgroups and
// forks into the namespaces).
func (e *env) ctHelperCmds() []*cobra.Command {
	exit := func(code int) { os.Exit(code) }
	return []*cobra.Command{
		{
			Use: container.InitMode, Hidden: true, DisableFlagParsing: true,
			Run: func(c *cobra.Command, _ []string) {
				_ = ctinit.RunInit(3)
				exit(1)
			},
		},
		{
			Use: container.ExecMode, Hidden: true, DisableFlagParsing: true,
			Run: func(c *cobra.Command, args []string) { exit(container.ExecHelper(args, e.stderr)) },
		},
	}
}
