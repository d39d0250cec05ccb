package container

import (
	"context"
	"log/slog"
	"time"

	"github.com/berthhq/berth/internal/ctinit"
)

// phases times the steps of one operation for a debug log line (where a
// start, exec or stop spends its time).
type phases struct {
	log   *slog.Logger
	op    string
	id    int
	start time.Time
	last  time.Time
	attrs []any
}

func (d *Driver) phases(op string, id int) *phases {
	now := time.Now()
	return &phases{log: d.o.Log, op: op, id: id, start: now, last: now}
}

// mark ends the step called name.
func (p *phases) mark(name string) {
	if !p.on() {
		return
	}
	now := time.Now()
	p.attrs = append(p.attrs, name, now.Sub(p.last).Round(time.Microsecond))
	p.last = now
}

// on reports whether the steps are logged.
func (p *phases) on() bool { return p.log.Enabled(context.Background(), slog.LevelDebug) }

// detail adds a part of the last step, measured elsewhere, as
// "step/part".
func (p *phases) detail(step string, parts []ctinit.Stage) {
	if !p.on() {
		return
	}
	for _, s := range parts {
		p.attrs = append(p.attrs, step+"/"+s.Name, s.Took.Round(time.Microsecond))
	}
}

// done logs the steps.
func (p *phases) done() {
	if !p.on() {
		return
	}
	p.log.Debug("container "+p.op+" phases", append([]any{"guest", p.id, "total", time.Since(p.start).Round(time.Microsecond)}, p.attrs...)...)
}
