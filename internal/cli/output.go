package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
)

// show prints v as JSON with --output json, else calls table.
func (e *env) show(v any, table func(w io.Writer)) error {
	if e.output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func row(w io.Writer, cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(w, strings.Join(s, "\t"))
}

// kv prints key/value pairs, one per line.
func kv(w io.Writer, pairs ...any) {
	for i := 0; i+1 < len(pairs); i += 2 {
		row(w, fmt.Sprint(pairs[i])+":", pairs[i+1])
	}
}

func ts(unix int64) string {
	if unix == 0 {
		return "-"
	}
	return time.Unix(unix, 0).Format("2006-01-02 15:04:05")
}

// asyncFlags adds --background to a command that starts a task.
func asyncFlags(c *cobra.Command, bg *bool) {
	c.Flags().BoolVar(bg, "background", false, "print the task's UPID and return at once instead of following its log")
}

// runTask starts a task with a POST/DELETE and, unless background, follows
// its log to stdout in the same request and turns a failed task into exit
// code 6.
func (e *env) runTask(ctx context.Context, method, path string, body any, background bool) error {
	if background || e.output == "json" {
		var acc wire.Accepted
		if err := e.do(ctx, method, path, body, &acc); err != nil {
			return err
		}
		if e.output == "json" {
			return e.show(acc, nil)
		}
		fmt.Fprintln(e.stdout, acc.UPID)
		return nil
	}
	cl, err := e.client(ctx)
	if err != nil {
		return err
	}
	t, err := cl.RunTask(ctx, method, path, body, func(line string) { fmt.Fprintln(e.stdout, line) })
	if err != nil {
		return apiError(err)
	}
	if t.ExitStatus != wire.TaskOK {
		return &taskFailed{t: t}
	}
	return nil
}
