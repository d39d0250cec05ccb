package api

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/task"
)

func (sv *Services) taskRoutes() []Route {
	upid := Param{Name: "upid", In: "path", Type: "string"}
	return []Route{
		{Method: "GET", Path: "/api/v1/tasks", Summary: "List tasks, newest first.", Role: wire.RoleAuditor, Resp: []wire.Task{},
			Params: []Param{
				{Name: "errors", In: "query", Type: "boolean", Description: "only tasks that failed"},
				{Name: "running", In: "query", Type: "boolean", Description: "only running tasks"},
				{Name: "guest", In: "query", Type: "string", Description: "only tasks of this guest ID"},
				{Name: "type", In: "query", Type: "string", Description: "only tasks of this type (e.g. startall)"},
				{Name: "since", In: "query", Type: "integer", Description: "only tasks started at or after this unix time"},
				{Name: "until", In: "query", Type: "integer", Description: "only tasks started at or before this unix time"},
				{Name: "limit", In: "query", Type: "integer", Description: "at most this many tasks"},
			},
			Handle: sv.listTasks},
		{Method: "GET", Path: "/api/v1/tasks/{upid}", Summary: "A task's status.", Role: wire.RoleAuditor, Params: []Param{upid}, Resp: wire.Task{},
			Handle: func(r *Request) (any, error) { return sv.Tasks.Get(r.Context(), r.PathValue("upid")) }},
		{Method: "GET", Path: "/api/v1/tasks/{upid}/log", Summary: "A page of a task's log; with follow=1 a text/plain stream of lines until the task ends.",
			Role: wire.RoleAuditor, Resp: wire.TaskLog{}, ContentType: "application/json or text/plain (follow)",
			Params: []Param{upid,
				{Name: "start", In: "query", Type: "integer", Description: "first line (0-based)"},
				{Name: "limit", In: "query", Type: "integer", Description: "at most this many lines (default 500)"},
				{Name: "follow", In: "query", Type: "boolean", Description: "stream lines live until the task ends"}},
			Stream: sv.taskLog},
		{Method: "DELETE", Path: "/api/v1/tasks/{upid}", Summary: "Stop a running task.", Role: wire.RoleOperator, Params: []Param{upid},
			Handle: func(r *Request) (any, error) { return nil, sv.Tasks.Stop(r.PathValue("upid")) }},
	}
}

func (sv *Services) listTasks(r *Request) (any, error) {
	var f task.Filter
	var err error
	if f.Errors, err = r.QueryBool("errors"); err != nil {
		return nil, err
	}
	if f.Running, err = r.QueryBool("running"); err != nil {
		return nil, err
	}
	if f.Limit, err = r.QueryInt("limit", 0); err != nil {
		return nil, err
	}
	since, err := r.QueryInt("since", 0)
	if err != nil {
		return nil, err
	}
	until, err := r.QueryInt("until", 0)
	if err != nil {
		return nil, err
	}
	if since != 0 {
		f.Since = time.Unix(int64(since), 0)
	}
	if until != 0 {
		f.Until = time.Unix(int64(until), 0)
	}
	q := r.URL.Query()
	f.GuestID, f.Type = q.Get("guest"), q.Get("type")
	if f.GuestID != "" {
		if _, err := strconv.Atoi(f.GuestID); err != nil {
			return nil, Invalid("bad query parameter", map[string]string{"guest": "must be a numeric guest ID"})
		}
	}
	ts, err := sv.Tasks.List(r.Context(), f)
	if ts == nil && err == nil {
		ts = []wire.Task{}
	}
	return ts, err
}

func (sv *Services) taskLog(w http.ResponseWriter, r *Request) error {
	upid := r.PathValue("upid")
	start, err := r.QueryInt("start", 0)
	if err != nil {
		return err
	}
	follow, err := r.QueryBool("follow")
	if err != nil {
		return err
	}
	if !follow {
		limit, err := r.QueryInt("limit", 500)
		if err != nil {
			return err
		}
		l, err := sv.Tasks.ReadLog(upid, start, limit)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, wire.Envelope[wire.TaskLog]{Data: l})
		return nil
	}
	if _, err := sv.Tasks.Get(r.Context(), upid); err != nil {
		return err
	}
	return sv.streamTask(w, r, upid, start)
}

// FollowTask answers a request that started task upid with follow=1
// (Server.SetTaskFollower): the task's log stream from its first line,
// the UPID in the TaskHeader header and Location.
func (sv *Services) FollowTask(w http.ResponseWriter, r *Request, upid string) error {
	w.Header().Set(wire.TaskHeader, upid)
	w.Header().Set("Location", "/api/v1/tasks/"+url.PathEscape(upid))
	return sv.streamTask(w, r, upid, 0)
}

// streamTask writes task upid's log from line start as a text/plain
// stream until the task ends, and its final entry as the TaskTrailer
// trailer.
func (sv *Services) streamTask(w http.ResponseWriter, r *Request, upid string, start int) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Trailer", wire.TaskTrailer)
	w.WriteHeader(http.StatusOK)
	// Lines are flushed to the client batch by batch while the task runs;
	// the last batch goes out with the end of the stream and the trailer,
	// in one write.
	bw := bufio.NewWriter(w)
	fl, _ := w.(http.Flusher)
	err := sv.Tasks.FollowBatches(r.Context(), upid, start, func(line string) error {
		if _, err := bw.WriteString(line); err != nil {
			return err
		}
		return bw.WriteByte('\n')
	}, func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		if !IsClientGone(err) {
			sv.Log.Warn("follow task log", "upid", upid, "err", err)
		}
		return nil // headers are sent; nothing more can be reported
	}
	// The stream ended with the task: its final entry goes in the trailer,
	// so a client waiting for the task needs no further request.
	if t, err := sv.Tasks.Get(r.Context(), upid); err == nil && t.Status != wire.TaskRunning {
		if b, err := json.Marshal(t); err == nil {
			w.Header().Set(wire.TaskTrailer, string(b))
		}
	}
	return nil
}
