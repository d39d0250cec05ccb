// Package task runs berth's long-running operations (starting guests,
// backups, package updates, …) as tasks in the Proxmox style: every task
// gets a UPID, a plain-text log file ending in "TASK OK" or
// "TASK ERROR: <message>", and, once it ends, an entry in the task index
// kept in the store (running tasks are answered from memory), so clients
// can list tasks, read or follow their logs, wait for them and stop them.
//
// The Manager also keeps the index sound across restarts: Recover indexes
// the logs a crashed daemon left without an entry (as failed with
// "unexpected status" unless the log ends with the task's final line), Prune enforces the retention limits, and Shutdown lets running
// tasks finish (or cancels them) so a graceful stop leaves nothing
// running.
//
// The package is not a job scheduler or queue: a task starts when Start is
// called and runs in a goroutine of the daemon; nothing is retried,
// persisted for later execution or distributed to other nodes. It does not
// check permissions (callers authorise before Start, Stop or ReadLog) and
// is not an HTTP layer; it only guarantees that UPIDs are path-safe.
package task
