package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/client"
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
}
