package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berthhq/berth/api"
)

// TestRunTaskFallbacks checks RunTask against what a daemon may answer
// besides the stream with its trailer: a daemon without follow=1 (the
// 202 and the UPID, then the log followed as before), and a stream that
// ends without the trailer (the rest of the log followed from the first
// line not seen). The daemon is a fake here: older daemons and cut
// streams are what it stands for.
func TestRunTaskFallbacks(t *testing.T) {
	const upid = "UPID:n:00000001:00000002:00000003:vzstart:1:root@pam:"
	lines := []string{"starting", "started", "TASK OK"}
	final, _ := json.Marshal(api.Task{UPID: upid, Status: api.TaskStopped, ExitStatus: api.TaskOK})
	var mu sync.Mutex
	var followStarts []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /old", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"data":{"upid":%q}}`, upid)
	})
	mux.HandleFunc("POST /cut", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("follow") != "1" {
			t.Errorf("RunTask sent %s without follow=1", r.URL)
		}
		w.Header().Set(api.TaskHeader, upid)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, lines[0]) // and no trailer
	})
	mux.HandleFunc("GET /api/v1/tasks/{upid}/log", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		followStarts = append(followStarts, r.URL.Query().Get("start"))
		mu.Unlock()
		var start int
		fmt.Sscan(r.URL.Query().Get("start"), &start)
		w.Header().Set("Trailer", api.TaskTrailer)
		w.Header().Set("Content-Type", "text/plain")
		for _, l := range lines[start:] {
			fmt.Fprintln(w, l)
		}
		w.Header().Set(api.TaskTrailer, string(final))
	})
	sock, _, _ := unixServer(t, mux)
	c := NewUnix(sock)
	for _, tc := range []struct{ path, start string }{{"/old", "0"}, {"/cut?x=1", "1"}} {
		mu.Lock()
		followStarts = nil
		mu.Unlock()
		var got []string
		tk, err := c.RunTask(context.Background(), "POST", tc.path, nil, func(l string) { got = append(got, l) })
		if err != nil {
			t.Fatalf("RunTask %s: %v", tc.path, err)
		}
		if tk.UPID != upid || tk.ExitStatus != api.TaskOK {
			t.Errorf("RunTask %s = %+v, want %s OK", tc.path, tk, upid)
		}
		if !slices.Equal(got, lines) {
			t.Errorf("RunTask %s emitted %q, want %q", tc.path, got, lines)
		}
		mu.Lock()
		if want := []string{tc.start}; !slices.Equal(followStarts, want) {
			t.Errorf("RunTask %s followed the log from %v, want %v", tc.path, followStarts, want)
		}
		mu.Unlock()
	}
	if _, err := c.RunTask(context.Background(), "POST", "/nothing", nil, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("RunTask on a missing route: %v, want the 404", err)
	}
}
