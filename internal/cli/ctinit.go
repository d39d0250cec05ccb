package cli

import (
	"github.com/spf13/cobra"

	"github.com/berthhq/berth/internal/ctinit"
)

// ctHelperCmds are the hidden modes the container driver executes berth
// in: the minimal init of container images without one (executed inside
// the container, already confined, in place of /sbin/init).
func (e *env) ctHelperCmds() []*cobra.Command {
	return []*cobra.Command{
		{
			Use: ctinit.MiniInitMode, Hidden: true, DisableFlagParsing: true,
			Run: func(c *cobra.Command, args []string) { ctinit.MiniInit(args) },
		},
	}
}
