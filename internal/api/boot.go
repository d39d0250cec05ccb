package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/esp"
	"github.com/berthhq/berth/internal/task"
)

// bootRoutes expose `berth boot` status and refresh. The ESP tool itself
// is package esp, which the standalone CLI calls too (kernel hooks run it
// with no daemon); both serialise on the same lock file.
func (sv *Services) bootRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/v1/node/boot/status", Summary: "Boot loader status: boot mode, Secure Boot, firmware entries, and per ESP its mode, kernels, sync state and damage.", Role: wire.RoleAuditor, Resp: wire.BootStatus{},
			Handle: func(r *Request) (any, error) {
				rep, err := sv.bootTool(io.Discard, io.Discard).Status()
				if err != nil {
					return nil, err
				}
				return rep.Wire(), nil
			}},
		{Method: "GET", Path: "/api/v1/node/boot/kernels", Summary: "Kernels kept on the ESPs: the manual list, the full selection and the pins.", Role: wire.RoleAuditor, Resp: wire.BootKernels{},
			Handle: func(r *Request) (any, error) {
				t := sv.bootTool(io.Discard, io.Discard)
				pin, next, _ := t.Pins()
				return wire.BootKernels{Manual: orEmpty(t.Manual()), Selected: orEmpty(t.Kernels("")), Pin: pin, NextBootPin: next}, nil
			}},
		{Method: "POST", Path: "/api/v1/node/boot/refresh", Summary: "Copy the selected kernels to every ESP and update the loader entries, as a task.", Role: wire.RoleAdmin, Async: true,
			Handle: func(r *Request) (any, error) {
				return sv.start(r, "bootrefresh", "", func(ctx context.Context, l *task.Log) error {
					w := &taskLines{l: l}
					defer w.flush()
					return sv.bootTool(w, w).Refresh(ctx, "")
				})
			}},
	}
}

// bootTool returns the ESP tool for the host (BootRoot, "/" by default).
func (sv *Services) bootTool(stdout, stderr io.Writer) *esp.Tool {
	log := sv.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return esp.New(sv.BootRoot, stdout, stderr, log)
}

// BootSummary is the quick ESP status node status shows (nil when the
// host has no ESP list).
func (sv *Services) BootSummary() *wire.BootStatus {
	rep, err := sv.bootTool(io.Discard, io.Discard).QuickStatus()
	if err != nil || !rep.Configured {
		return nil
	}
	w := rep.Wire()
	return &w
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// taskLines turns written bytes into task log lines.
type taskLines struct {
	mu  sync.Mutex
	l   *task.Log
	buf []byte
}

func (w *taskLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.l.Println(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func (w *taskLines) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.l.Println(string(w.buf))
		w.buf = nil
	}
}
