package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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

// TestContainerExecFallsBackToUpgrade: a daemon that knows only the
// upgraded exec stream answers an exec without input with a 400 naming
// the Upgrade header; the client asks again with the upgrade. (A fake
// daemon: it stands for an older one.)
func TestContainerExecFallsBackToUpgrade(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/containers/7/exec", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Header.Get("Upgrade"))
		mu.Unlock()
		if r.Header.Get("Upgrade") != api.ExecUpgrade {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"status":400,"code":"invalid","message":"this endpoint needs 'Connection: Upgrade' and 'Upgrade: berth-exec/1'"}}`)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.ExecUpgrade + "\r\n\r\n")
		// stdout "hi", exit 3
		brw.Write([]byte{api.ExecFrameStdout, 0, 0, 0, 2, 'h', 'i', api.ExecFrameExit, 0, 0, 0, 4, 0, 0, 0, 3})
		brw.Flush()
		// Wait for the client's end of stdin, then hang up.
		buf := make([]byte, 5)
		_, _ = io.ReadFull(brw, buf)
	})
	sock, _, _ := unixServer(t, mux)
	c := NewUnix(sock)
	var out strings.Builder
	code, err := c.ContainerExec(context.Background(), 7, api.ContainerExecRequest{Argv: []string{"true"}}, ExecIO{Stdout: &out})
	if err != nil || code != 3 || out.String() != "hi" {
		t.Errorf("ContainerExec = %d, %q, %v; want 3, \"hi\", nil", code, out.String(), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(asked, []string{"", api.ExecUpgrade}) {
		t.Errorf("the daemon was asked with Upgrade %q, want without, then with", asked)
	}
}
