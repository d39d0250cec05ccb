// Package ctinit is the code berth runs inside a new container's
// namespaces, as a hidden re-exec'd mode of the berth binary: it receives
// the container's overlay root (a mount file descriptor) and its spec from
// the daemon, builds the mount tree (minimal /dev, masked /proc, read-only
// /sys), configures hostname and network, drops capabilities, installs the
// seccomp filter and then replaces itself with the container's init, so no
// berth process stays behind in the container.
//
// It also holds Join, which a host-side exec helper runs to enter a running
// container: it forks a single-threaded child with the raw clone system
// call, and that child joins the namespaces with setns, confines itself
// like init and executes the command, so no berth code runs inside the
// container. The daemon itself never calls setns.
package ctinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Spec is what the daemon sends the init helper.
type Spec struct {
	// Root names the container's root for messages. The root mount itself
	// comes as a descriptor and is attached over /tmp inside the new
	// (private) mount namespace: the guest's ids may not be able to search
	// the data directory, but every host has a /tmp.
	Root string `json:"root"`
	// Hostname is set in the container's UTS namespace.
	Hostname string `json:"hostname"`
	// Init is the argv of the container's init; empty means /sbin/init.
	Init []string `json:"init,omitempty"`
	// Env is the initial environment of init.
	Env []string `json:"env,omitempty"`
	// Privileged containers have no user namespace.
	Privileged bool `json:"privileged,omitempty"`
	// Nets are the NICs, already moved into the network namespace.
	Nets []Net `json:"nets,omitempty"`
	// IPTool is the host's ip(8), run before the root is switched.
	IPTool string `json:"iptool,omitempty"`
	// KSM is the container's KSM choice (ksm.Choice.String()): "on"
	// makes all its memory mergeable (PR_SET_MEMORY_MERGE, inherited by
	// every process inside), "off" forbids making any of it mergeable (a
	// seccomp filter), "" or "default" leaves it to the programs.
	KSM string `json:"ksm,omitempty"`
}

// Net is one NIC's configuration inside the container.
type Net struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"` // CIDR, empty for none or DHCP
	Gateway string `json:"gateway,omitempty"`
	DHCP    bool   `json:"dhcp,omitempty"`
}

// SendSpec sends spec and the root mount fd over the unix socket sock.
func SendSpec(sock int, spec Spec, rootFD int) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	if err := unix.Sendmsg(sock, b, unix.UnixRights(rootFD), nil, 0); err != nil {
		return fmt.Errorf("send container spec to its init helper: %w", err)
	}
	return nil
}

// recvSpec reads the spec and the root mount fd from sock.
func recvSpec(sock int) (Spec, int, error) {
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, 0)
	if err != nil {
		return Spec{}, -1, fmt.Errorf("receive spec: %w", err)
	}
	var spec Spec
	if err := json.Unmarshal(buf[:n], &spec); err != nil {
		return Spec{}, -1, fmt.Errorf("decode spec: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return Spec{}, -1, errors.New("receive spec: no root mount descriptor")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return Spec{}, -1, errors.New("receive spec: no root mount descriptor")
	}
	return spec, fds[0], nil
}

// report writes an error message for the daemon to the socket.
func report(sock int, err error) {
	_, _ = unix.Write(sock, []byte(err.Error()))
}

// WaitReady reads the init helper's answer on sock: the helper closes the
// socket (close-on-exec) when it has executed init, or writes an error
// message first. It returns that error, or nil.
func WaitReady(sock int) error {
	buf := make([]byte, 4096)
	n, err := unix.Read(sock, buf)
	if err != nil {
		return fmt.Errorf("container init helper: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("container setup failed: %s", buf[:n])
	}
	return nil
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
