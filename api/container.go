package api

// ContainerExecRequest is the body of POST /containers/{id}/exec, which
// then upgrades the connection to the exec stream (see ExecFrame*). A
// request without the Upgrade header gets the command's output instead,
// as the same frames in a plain 200 response of type ExecFramesType: the
// command's stdin is /dev/null, and the connection stays usable for
// further requests.
type ContainerExecRequest struct {
	// Argv is the command and its arguments; Argv[0] is looked up in the
	// container's PATH.
	Argv []string `json:"argv"`
	// TTY runs the command on a pseudo-terminal (stderr joins stdout).
	TTY bool `json:"tty,omitempty"`
	// Env adds VAR=VALUE entries to the command's environment.
	Env []string `json:"env,omitempty"`
}

// The exec and console streams: after the 101 Switching Protocols answer
// (Upgrade: berth-exec/1) both sides send frames of one type byte, a
// 4-byte big-endian length and that many bytes of payload.
const (
	// ExecUpgrade is the Upgrade header value of exec and console.
	ExecUpgrade = "berth-exec/1"
	// ExecFramesType is the content type of an exec answer without
	// upgrade: daemon→client frames only.
	ExecFramesType = "application/vnd.berth.exec-frames"
	// ExecFrameStdin (client→daemon) carries input; an empty one closes
	// the command's stdin.
	ExecFrameStdin byte = 0
	// ExecFrameStdout and ExecFrameStderr (daemon→client) carry output.
	ExecFrameStdout byte = 1
	ExecFrameStderr byte = 2
	// ExecFrameExit (daemon→client) ends the stream: a 4-byte big-endian
	// exit code.
	ExecFrameExit byte = 3
	// ExecFrameError (daemon→client) ends the stream with a message when
	// the command could not run.
	ExecFrameError byte = 4
)

// ContainerStatus is a container's runtime state.
type ContainerStatus struct {
	ID     int    `json:"id"`
	Status string `json:"status"`
	// PID is the container's init on the host (0 when stopped).
	PID int `json:"pid,omitempty"`
	// Uptime in seconds.
	Uptime int64 `json:"uptime,omitempty"`
	// Memory is the cgroup's current memory use in bytes.
	Memory int64 `json:"memory,omitempty"`
	// Processes is the number of processes in the container.
	Processes int `json:"processes,omitempty"`
	// Cgroup is the container's cgroup path below each hierarchy.
	Cgroup string `json:"cgroup,omitempty"`
}

// ContainerSnapshot is one snapshot of a container's writable layer.
type ContainerSnapshot struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Created is the Unix time the snapshot was taken.
	Created int64 `json:"created"`
}

// ContainerSnapshotRequest is the body of POST /containers/{id}/snapshots.
type ContainerSnapshotRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// ContainerCloneRequest is the body of POST /containers/{id}/clone.
type ContainerCloneRequest struct {
	// NewID is the clone's guest ID; it must be free.
	NewID int `json:"newid"`
	// Name is the clone's name and host name; empty keeps the source's
	// host name and sets no name.
	Name string `json:"name,omitempty"`
}

// ContainerConsoleLog is init's recent console output.
type ContainerConsoleLog struct {
	Log string `json:"log"`
}
