package cli

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
)

func (e *env) taskCmd() *cobra.Command {
	c := &cobra.Command{Use: "task", Short: "List tasks, read and follow their logs, stop them"}
	c.AddCommand(e.taskList(), e.taskLog(), e.taskStatus(), e.taskStop())
	return c
}

// parseTime accepts unix seconds, RFC 3339, "2006-01-02 15:04" or a
// duration ago like "2h".
func parseTime(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d).Unix(), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t.Unix(), nil
		}
	}
	return 0, fmt.Errorf("%q is not a time: use unix seconds, RFC 3339, 'YYYY-MM-DD[ HH:MM]' or a duration ago like 2h", s)
}

func (e *env) taskList() *cobra.Command {
	var f client.TaskFilter
	var since, until string
	c := &cobra.Command{
		Use:   "list",
		Short: "List tasks, newest first",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var err error
			if f.Since, err = parseTime(since); err != nil {
				return usageError{fmt.Errorf("--since: %w", err)}
			}
			if f.Until, err = parseTime(until); err != nil {
				return usageError{fmt.Errorf("--until: %w", err)}
			}
			cl, err := e.client(c.Context())
			if err != nil {
				return err
			}
			tasks, err := cl.Tasks(c.Context(), f)
			if err != nil {
				return err
			}
			return e.show(tasks, func(w io.Writer) {
				row(w, "UPID", "TYPE", "ID", "USER", "START", "END", "STATUS")
				for _, t := range tasks {
					st := t.ExitStatus
					if t.Status == wire.TaskRunning {
						st = wire.TaskRunning
					}
					row(w, t.UPID, t.Type, dash(t.ID), t.User, ts(t.StartTime), ts(t.EndTime), st)
				}
			})
		},
	}
	fl := c.Flags()
	fl.BoolVar(&f.Errors, "errors", false, "only tasks that failed")
	fl.BoolVar(&f.Running, "running", false, "only running tasks")
	fl.StringVar(&f.Guest, "guest", "", "only tasks of this guest ID")
	fl.StringVar(&f.Type, "type", "", "only tasks of this type (e.g. startall, vzstart)")
	fl.StringVar(&since, "since", "", "only tasks started at or after this time")
	fl.StringVar(&until, "until", "", "only tasks started at or before this time")
	fl.IntVar(&f.Limit, "limit", 50, "at most this many tasks (0 = all)")
	return c
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (e *env) taskLog() *cobra.Command {
	var follow bool
	var start int
	c := &cobra.Command{
		Use:   "log UPID",
		Short: "Print a task's log; --follow streams it live until the task ends",
		Args:  exactArgs(1, "a UPID"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := e.client(c.Context())
			if err != nil {
				return err
			}
			if follow {
				return cl.FollowTaskLog(c.Context(), args[0], start, func(l string) { fmt.Fprintln(e.stdout, l) })
			}
			for {
				l, err := cl.TaskLog(c.Context(), args[0], start, 500)
				if err != nil {
					return err
				}
				if e.output == "json" {
					return e.show(l, nil)
				}
				for _, line := range l.Lines {
					fmt.Fprintln(e.stdout, line)
				}
				start += len(l.Lines)
				if len(l.Lines) == 0 || start >= l.Total {
					return nil
				}
			}
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the task ends")
	c.Flags().IntVar(&start, "start", 0, "first line to print (0-based)")
	return c
}

func (e *env) taskStatus() *cobra.Command {
	return &cobra.Command{
		Use:   "status UPID",
		Short: "Show a task's status",
		Args:  exactArgs(1, "a UPID"),
		RunE: func(c *cobra.Command, args []string) error {
			var t wire.Task
			if err := e.do(c.Context(), "GET", "/api/v1/tasks/"+url.PathEscape(args[0]), nil, &t); err != nil {
				return err
			}
			return e.show(t, func(w io.Writer) {
				kv(w, "upid", t.UPID, "type", t.Type, "id", dash(t.ID), "user", t.User, "node", t.Node, "pid", t.PID,
					"starttime", ts(t.StartTime), "endtime", ts(t.EndTime), "status", t.Status, "exitstatus", dash(t.ExitStatus))
			})
		},
	}
}

func (e *env) taskStop() *cobra.Command {
	return &cobra.Command{
		Use:   "stop UPID",
		Short: "Stop a running task",
		Args:  exactArgs(1, "a UPID"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.do(c.Context(), "DELETE", "/api/v1/tasks/"+url.PathEscape(args[0]), nil, nil)
		},
	}
}
