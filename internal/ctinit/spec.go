// Package ctinit creates container processes straight from the daemon,
// without re-executing a helper binary: StartInit starts a new
// container's init in fresh namespaces (and keeps its first child as the
// container's exec helper, see Helper), and Join forks a command into a
// running container's when there is no helper.
// The forked children are copies of one daemon thread that borrow the
// daemon's memory (vfork) and run a program of raw system calls prepared
// before the fork (see program in raw.go): no Go code, no allocation, no
// runtime. For init, a first child joins the container's cgroups, enters
// its user namespace (NewUserNS) and network namespace (NewNetNS, when it
// has NICs), unshares the other namespaces and spawns init as PID 1,
// which attaches the overlay root (a mount file descriptor), builds the
// mount tree (minimal /dev, masked /proc, read-only /sys), sets the
// hostname, brings the network up, drops capabilities, installs the
// seccomp filter and executes the container's init; for exec the child
// joins the container's cgroups and namespaces, confines itself the same
// way and executes the command. No berth process runs inside a container
// (except MiniInit, berth's own init for images without one): the exec
// helper is outside its PID namespace and cgroups.
//
// The daemon's own threads never change namespace: every setns and
// unshare happens in the single-threaded children.
package ctinit

// Spec is a new container's setup.
type Spec struct {
	// Root names the container's root for messages. The root mount itself
	// comes as a descriptor (RootFS) and is attached over /tmp inside the new
	// (private) mount namespace: the guest's ids may not be able to search
	// the data directory, but every host has a /tmp.
	Root string
	// Hostname is set in the container's UTS namespace.
	Hostname string
	// Init is the argv of the container's init; empty means /sbin/init.
	Init []string
	// Env is the initial environment of init.
	Env []string
	// Privileged containers have no user namespace.
	Privileged bool
	// UserNS is a descriptor of the container's user namespace
	// (NewUserNS), which unprivileged containers enter; ignored when
	// Privileged.
	UserNS int
	// NetNS is a descriptor of the network namespace made for the
	// container by NewNetNS, with its NICs already moved in; -1 makes a
	// new, empty one.
	NetNS int
	// RootFS is the root file system: a detached mount (an overlayfs
	// whose image layer is id-mapped through UserNS).
	RootFS int
	// CgroupProcs are the container's cgroup.procs files, one per
	// hierarchy, open for writing: init joins each.
	CgroupProcs []int
	// Nets are the NICs in NetNS.
	Nets []Net
	// KSM is the container's KSM choice (ksm.Choice.String()): "on"
	// makes all its memory mergeable (PR_SET_MEMORY_MERGE, inherited by
	// every process inside), "off" forbids making any of it mergeable (a
	// seccomp filter), "" or "default" leaves it to the programs.
	KSM string
	// Console is the descriptor init's output goes to, Null one of
	// /dev/null for its input.
	Console, Null int
	// Trace makes the children record when they reach each stage of the
	// setup (Init.Stages), for the debug log.
	Trace bool
	// Self is a descriptor of the berth binary, executed in MiniInitMode
	// when Init is empty and the image has no /sbin/init; -1 for none.
	Self int
	// Helper keeps the first child as the container's exec helper
	// (Init.Helper, see Helper), which confines itself before it spawns
	// init (init inherits the confinement). Only for KSM "" or
	// "default": the helper shares the daemon's memory.
	Helper bool
	// HelperLeave are the daemon's own cgroup.procs files (open for
	// writing), one per hierarchy of CgroupProcs: the helper moves back
	// there once init runs, and each command joins the container's
	// groups (CgroupProcs, which the helper keeps open).
	HelperLeave []int
}

// Net is one NIC's configuration inside the container.
type Net struct {
	Name string
}
