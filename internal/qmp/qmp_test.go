package qmp

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr bool
		check   func(Message) bool
	}{
		{`{"QMP": {"version": {}, "capabilities": []}}`, false, func(m Message) bool { return m.Greeting != nil }},
		{`{"return": {}}`, false, func(m Message) bool { return m.Return != nil }},
		{`{"error": {"class": "GenericError", "desc": "nope"}}`, false, func(m Message) bool { return m.Error.Desc == "nope" }},
		{`{"event": "SHUTDOWN", "data": {"guest": true}, "timestamp": {"seconds": 1, "microseconds": 2}}`, false, func(m Message) bool { return m.Event == "SHUTDOWN" }},
		{`{"return": {}, "event": "X"}`, true, nil},
		{`{}`, true, nil},
		{`not json`, true, nil},
	} {
		m, err := ParseMessage([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseMessage(%s): err = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && !tc.check(m) {
			t.Errorf("ParseMessage(%s) = %+v: wrong content", tc.in, m)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(`{"QMP": {"version": {"qemu": {"micro": 0}}, "capabilities": ["oob"]}}`))
	f.Add([]byte(`{"return": {"running": true, "status": "running"}}`))
	f.Add([]byte(`{"error": {"class": "CommandNotFound", "desc": "x"}}`))
	f.Add([]byte(`{"event": "POWERDOWN", "timestamp": {"seconds": 1, "microseconds": 1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		n := 0
		if m.Greeting != nil {
			n++
		}
		if m.Return != nil {
			n++
		}
		if m.Error != nil {
			n++
		}
		if m.Event != "" {
			n++
		}
		if n != 1 {
			t.Fatalf("accepted %q with %d kinds", b, n)
		}
	})
}

// TestRealQEMU talks to a real QEMU (no guest, -machine none) over QMP.
func TestRealQEMU(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (make test installs deps/vm.debs)")
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-display", "none", "-S",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var c *Client
	for {
		if c, err = Dial(ctx, sock); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dial: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	st, err := c.QueryStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Running || st.Status != "prelaunch" {
		t.Errorf("status = %+v, want prelaunch (started with -S)", st)
	}
	if err := c.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ = c.QueryStatus(ctx); st.Status != "running" {
		t.Errorf("after cont status = %+v, want running", st)
	}
	var qe *Error
	if err := c.Execute(ctx, "no-such-command", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: err = %v, want CommandNotFound", err)
	}
	if err := c.Execute(ctx, "quit", nil, nil); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}
