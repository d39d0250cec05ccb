package api

// Task status values.
const (
	TaskRunning = "running"
	TaskStopped = "stopped"
	// TaskOK is the exit status of a task that succeeded.
	TaskOK = "OK"
	// TaskUnexpected is the exit status of a task that was running when
	// the daemon died.
	TaskUnexpected = "unexpected status"
)

// TaskTrailer is the HTTP trailer of a followed task log stream
// (GET /tasks/{upid}/log?follow=1) that holds the task's final entry as
// JSON, once the stream ended because the task did.
const TaskTrailer = "Berth-Task"

// TaskHeader names the task whose log a response streams: the UPID of
// the task a POST or DELETE with follow=1 started (the response is then
// that task's log stream, as GET /tasks/{upid}/log?follow=1, with the
// final entry in TaskTrailer, instead of the 202 with the UPID).
const TaskHeader = "Berth-Upid"

// Task is one entry of the task index.
type Task struct {
	UPID      string `json:"upid"`
	Node      string `json:"node"`
	PID       int    `json:"pid"`
	PStart    uint64 `json:"pstart"`
	StartTime int64  `json:"starttime"`
	EndTime   int64  `json:"endtime,omitempty"`
	Type      string `json:"type"`
	ID        string `json:"id,omitempty"`
	User      string `json:"user"`
	// Status is "running" or "stopped".
	Status string `json:"status"`
	// ExitStatus is set once stopped: "OK", "unexpected status", or the
	// error message of a failed task.
	ExitStatus string `json:"exitstatus,omitempty"`
}

// TaskLog is a page of a task's log.
type TaskLog struct {
	// Start is the index of the first line returned.
	Start int `json:"start"`
	// Total is the number of lines the log holds now.
	Total int      `json:"total"`
	Lines []string `json:"lines"`
	// Running tells whether more lines may follow.
	Running bool `json:"running"`
}
