package guest

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/berthhq/berth/api"
)

// ErrNotSupported is returned (possibly wrapped) by drivers for operations
// their kind of guest lacks, such as Console or Exec.
var ErrNotSupported = errors.New("not supported by this guest driver")

// Logger receives progress lines for the task log. The task log satisfies
// it. Implementations need not be safe for concurrent use: StopAll, which
// shuts guests down in parallel, serialises its own and its drivers' calls.
type Logger interface {
	Printf(format string, args ...any)
}

// State is a guest's runtime state as a driver sees it.
type State struct {
	// Status is api.GuestRunning, GuestStopped, GuestPaused or
	// GuestUnknown.
	Status string
	// PID is the guest's main host process (QEMU, the container's init,
	// the UML kernel), or 0 when it has none.
	PID int
	// Details holds driver-specific facts worth showing (uptime, QMP
	// status, cgroup path…).
	Details map[string]string
}

// ExecRequest is a command to run inside a guest.
type ExecRequest struct {
	// Argv is the program and its arguments; Argv[0] is looked up in the
	// guest's PATH.
	Argv []string
	// Stdin, Stdout and Stderr are connected to the command; nil means an
	// empty input or discarded output.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// TTY asks for a pseudo-terminal; Stderr is then merged into Stdout.
	TTY bool
	// Env adds VAR=VALUE entries to the command's environment.
	Env []string
}

// Driver runs one kind of guest. The registry owns configurations; a driver
// owns everything on the host that makes a configuration real (disks, root
// file systems, processes, sockets). Every method gets the guest's full,
// stored configuration, so drivers keep no copy of it. Methods that do work
// worth reporting take a Logger for the task log. Drivers must be safe for
// concurrent use on different guests; the caller serialises operations on
// one guest. Long operations must return promptly when ctx is cancelled.
type Driver interface {
	// Kind returns the kind of guest this driver runs.
	Kind() api.GuestKind

	// Validate checks the driver-specific parts of cfg (mostly
	// cfg.Config) and returns what is wrong, keyed by field name (the
	// config key for options), or nil when cfg is acceptable. It must not
	// touch the host.
	Validate(cfg api.Guest) map[string]string

	// Create provisions what a new guest needs on the host (disk images,
	// root file system, …) after its configuration has been registered.
	// It leaves the guest stopped.
	Create(ctx context.Context, cfg api.Guest, log Logger) error

	// Start boots a stopped guest and returns once it runs; it does not
	// wait for the guest OS to finish booting.
	Start(ctx context.Context, cfg api.Guest, log Logger) error

	// Shutdown asks the guest OS to power off cleanly (ACPI, SIGPWR, …)
	// and waits; if the guest still runs after timeout it is stopped hard
	// as by Stop. Shutting down a stopped guest is not an error.
	Shutdown(ctx context.Context, cfg api.Guest, timeout time.Duration, log Logger) error

	// Stop kills the guest at once without asking the guest OS, like
	// pulling the plug. Stopping a stopped guest is not an error.
	Stop(ctx context.Context, cfg api.Guest, log Logger) error

	// Status reports the guest's runtime state. A guest the driver knows
	// nothing about is stopped, not an error.
	Status(ctx context.Context, cfg api.Guest) (State, error)

	// Destroy removes everything Create made. The guest must be stopped;
	// the caller removes the configuration afterwards.
	Destroy(ctx context.Context, cfg api.Guest, log Logger) error

	// Console attaches to the guest's serial console or TTY. Closing the
	// returned stream detaches without affecting the guest. Drivers
	// without a console return ErrNotSupported.
	Console(ctx context.Context, cfg api.Guest) (io.ReadWriteCloser, error)

	// Exec runs a command inside the running guest, waits for it and
	// returns its exit code. Drivers without a way in (a VM without a
	// guest agent) return ErrNotSupported.
	Exec(ctx context.Context, cfg api.Guest, req ExecRequest) (int, error)

	// Adopt re-attaches to a guest that kept running across a daemon
	// restart (re-opening monitor sockets, re-watching the process) and
	// returns its state. For a guest that is not running it returns a
	// stopped State and no error.
	Adopt(ctx context.Context, cfg api.Guest) (State, error)
}

// kindLabel is the short word used in log lines: "CT", "VM" or "UML".
func kindLabel(k api.GuestKind) string {
	switch k {
	case api.GuestContainer:
		return "CT"
	case api.GuestVM:
		return "VM"
	case api.GuestUML:
		return "UML"
	}
	return string(k)
}
