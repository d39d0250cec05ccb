package hostnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/internal/ifupdown"
)

// HelperRequest is what the daemon sends the apply helper on stdin: the
// configuration to reach and the one applied before.
type HelperRequest struct {
	// Path is the main file's path (includes are read relative to it).
	Path string `json:"path"`
	// Cur is the content of the main file to apply.
	Cur []byte `json:"cur"`
	// Prev is the previously applied content; nil when unknown.
	Prev []byte `json:"prev,omitempty"`
	// Sys is where sysfs is mounted ("/sys").
	Sys string `json:"sys"`
	// DryRun plans and prints without changing anything.
	DryRun bool `json:"dry_run,omitempty"`
}

// RunHelper is the apply helper's body: it runs in the target network
// namespace (the daemon re-executes berth there, so the daemon's own
// threads never switch namespaces), reads the live state, validates,
// plans and executes, writing progress lines to out.
func RunHelper(ctx context.Context, in io.Reader, out io.Writer) error {
	var req HelperRequest
	if err := json.NewDecoder(in).Decode(&req); err != nil {
		return fmt.Errorf("read helper request: %w", err)
	}
	if req.Sys == "" {
		req.Sys = "/sys"
	}
	logf := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	return ApplyConfig(ctx, h, req, logf)
}

// ApplyConfig reads the live state through h, validates and plans req and
// (unless DryRun) executes the plan.
func ApplyConfig(ctx context.Context, h *netlink.Handle, req HelperRequest, logf Logf) error {
	live, err := ReadLive(h, req.Sys)
	if err != nil {
		return err
	}
	if req.Cur == nil {
		req.Cur = []byte{} // an empty file, not "read it from disk"
	}
	cur, err := ifupdown.Load(ifupdown.OS, req.Path, req.Cur)
	if err != nil {
		return err
	}
	if err := ifupdown.Validate(cur, live.Names()); err != nil {
		return err
	}
	var prev *ifupdown.Config
	if req.Prev != nil {
		if prev, err = ifupdown.Load(ifupdown.OS, req.Path, req.Prev); err != nil {
			logf("warning: the previously applied configuration does not parse (%v); nothing will be removed", err)
			prev = nil
		}
	}
	acts, err := Plan(cur, prev, live)
	if err != nil {
		return err
	}
	if len(acts) == 0 {
		logf("nothing to change: the live state matches the file")
		return nil
	}
	logf("%d change(s)", len(acts))
	if req.DryRun {
		for _, a := range acts {
			logf("%s", a)
		}
		return nil
	}
	x := &Executor{H: h, Sys: req.Sys, Log: logf}
	return x.Run(ctx, acts)
}

// IsInvalid reports whether err is a refusal before any change (bad file
// or an unsafe plan) rather than a failure half way.
func IsInvalid(err error) bool {
	var ve *ifupdown.ValidationError
	var pe *PlanError
	var se *ifupdown.SyntaxError
	return errors.As(err, &ve) || errors.As(err, &pe) || errors.As(err, &se)
}
