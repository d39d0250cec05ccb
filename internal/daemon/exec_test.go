package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
	"github.com/berthhq/berth/internal/execstream"
)

// TestDaemonContainerExec checks the exec stream through the unix socket:
// a stopped container gets a plain 409 before any upgrade, a driver error
// after the running check comes back as an error frame, and stdin, stdout,
// stderr and the exit code pass through.
func TestDaemonContainerExec(t *testing.T) {
	const id = 1000
	cl := fakeCTDaemon(t, id)
	ctx := context.Background()
	exec := func(argv string, stdin string) (int, string, string, error) {
		var out, errb bytes.Buffer
		code, err := cl.ContainerExec(ctx, id, wire.ContainerExecRequest{Argv: []string{argv}},
			client.ExecIO{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb})
		return code, out.String(), errb.String(), err
	}

	_, _, _, err := exec("cat", "")
	var ae *wire.Error
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Code != "not_running" {
		t.Fatalf("exec in a stopped container: %v, want a 409 not_running", err)
	}

	if err := benchTask(ctx, cl, "POST", "/api/v1/guests/1000/status/start", nil); err != nil {
		t.Fatal(err)
	}
	code, out, errOut, err := exec("cat", "hello\nworld\n")
	if err != nil || code != 7 || out != "hello\nworld\n" || errOut != "done" {
		t.Errorf("exec cat = %d, %q, %q, %v; want 7, the input, \"done\", nil", code, out, errOut, err)
	}
	_, _, _, err = exec("fail", "")
	if !errors.As(err, &ae) || ae.Code != "exec_failed" || !strings.Contains(ae.Message, "before the command started") {
		t.Errorf("exec whose driver fails: %v, want an exec_failed error with the driver's message", err)
	}
	if code, _, _, err := exec("true", ""); err != nil || code != 0 {
		t.Errorf("exec true = %d, %v", code, err)
	}

	// Without input the client asks for no upgrade: the output frames
	// come in the response, and the command's stdin is /dev/null.
	var outb, errb bytes.Buffer
	code, err = cl.ContainerExec(ctx, id, wire.ContainerExecRequest{Argv: []string{"cat"}}, client.ExecIO{Stdout: &outb, Stderr: &errb})
	if err != nil || code != 7 || outb.String() != "" || errb.String() != "done" {
		t.Errorf("exec cat without input = %d, %q, %q, %v; want 7, no output, \"done\", nil", code, outb.String(), errb.String(), err)
	}
	_, err = cl.ContainerExec(ctx, id, wire.ContainerExecRequest{Argv: []string{"fail"}}, client.ExecIO{})
	if !errors.As(err, &ae) || ae.Code != "exec_failed" {
		t.Errorf("exec without input whose driver fails: %v, want exec_failed", err)
	}
}

// TestDaemonContainerExecNoUpgrade checks exec without the Upgrade
// header on the wire: a plain 200 of output frames ending with the exit
// code, on a connection that then serves the next request; a stopped
// container still gets a plain 409.
func TestDaemonContainerExecNoUpgrade(t *testing.T) {
	const id = 1000
	cl, sock := fakeCTDaemonSocket(t, id)
	ctx := context.Background()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	post := func(path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://berth"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if err := req.Write(conn); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post("/api/v1/containers/1000/exec", `{"argv":["cat"]}`)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 409 || !strings.Contains(string(b), "not_running") {
		t.Fatalf("exec in a stopped container: %d %s, want a 409 not_running", resp.StatusCode, b)
	}
	if err := benchTask(ctx, cl, "POST", "/api/v1/guests/1000/status/start", nil); err != nil {
		t.Fatal(err)
	}
	resp = post("/api/v1/containers/1000/exec", `{"argv":["cat"]}`)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != wire.ExecFramesType {
		t.Fatalf("exec without upgrade: %d %q, want 200 %s", resp.StatusCode, resp.Header.Get("Content-Type"), wire.ExecFramesType)
	}
	var frames []string
	for {
		typ, p, err := execstream.ReadFrame(resp.Body)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("frames %q, then %v", frames, err)
		}
		frames = append(frames, fmt.Sprintf("%d:%x", typ, p))
	}
	resp.Body.Close()
	want := []string{fmt.Sprintf("%d:%x", wire.ExecFrameStderr, "done"), fmt.Sprintf("%d:%x", wire.ExecFrameExit, []byte{0, 0, 0, 7})}
	if !slices.Equal(frames, want) {
		t.Errorf("frames %q, want stderr \"done\" and exit 7: %q", frames, want)
	}
	// The same connection serves the next request.
	resp = post("/api/v1/guests/1000/status/stop?follow=1", "")
	b, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasSuffix(string(b), "TASK OK\n") {
		t.Errorf("stop on the exec's connection: %d %q", resp.StatusCode, b)
	}
}
