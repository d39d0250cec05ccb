package task

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Log is the log of one running task. Each call appends one or more whole
// lines to the task's log file with a single write, so readers never see a
// line of one call interleaved with another. Embedded newlines split the
// message into several lines; one trailing newline is ignored. Log is safe
// for concurrent use. Lines written after the task function returned are
// dropped, so the final "TASK OK" or "TASK ERROR" line stays last.
type Log struct {
	upid   string
	logger *slog.Logger

	mu      sync.Mutex
	f       *os.File
	size    int64         // bytes of complete lines in the file
	lines   int           // number of complete lines in the file
	changed chan struct{} // closed and replaced whenever size or done change
	closed  bool          // no more lines accepted
	done    bool          // the task's end is recorded; no more changes
	werr    error         // first write error, reported once
}

func newLog(upid string, f *os.File, logger *slog.Logger) *Log {
	return &Log{upid: upid, f: f, logger: logger, changed: make(chan struct{})}
}

// Printf appends the message formatted as with fmt.Sprintf.
func (l *Log) Printf(format string, args ...any) {
	l.write(fmt.Sprintf(format, args...))
}

// Println appends the operands formatted as with fmt.Sprint, separated by
// spaces.
func (l *Log) Println(args ...any) {
	l.write(strings.TrimSuffix(fmt.Sprintln(args...), "\n"))
}

func (l *Log) write(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.logger.Debug("task log line dropped: task already ended", "upid", l.upid, "line", msg)
		return
	}
	l.appendLocked(msg)
}

// appendLocked writes msg as lines and wakes followers. The caller holds
// l.mu.
func (l *Log) appendLocked(msg string) {
	l.appendQuiet(msg)
	l.broadcastLocked()
}

// appendQuiet is appendLocked without waking followers.
func (l *Log) appendQuiet(msg string) {
	msg = strings.TrimSuffix(msg, "\n")
	var b bytes.Buffer
	b.Grow(len(msg) + 1)
	b.WriteString(msg)
	b.WriteByte('\n')
	n := strings.Count(msg, "\n") + 1
	written, err := l.f.Write(b.Bytes())
	if err != nil {
		if l.werr == nil {
			l.werr = err
			l.logger.Error("cannot write task log", "upid", l.upid, "err", err)
		}
		// A short write leaves a partial line; count only what is complete.
		part := b.Bytes()[:written]
		if i := bytes.LastIndexByte(part, '\n'); i >= 0 {
			l.size += int64(i + 1)
			l.lines += bytes.Count(part, []byte{'\n'})
		}
		return
	}
	l.size += int64(written)
	l.lines += n
}

func (l *Log) broadcastLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// closeWith writes the final line. No further lines are accepted.
// Followers are woken by markDone, which follows at once: they then see
// the final line and the end together.
func (l *Log) closeWith(final string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.appendQuiet(final)
}

// syncClose flushes the file to disk and closes it; call it after
// closeWith. It returns the first error of any write, the sync or the
// close. The lock is not held while syncing, so readers of the log's size
// are not delayed; after closeWith nothing else touches the file.
func (l *Log) syncClose() error {
	l.mu.Lock()
	f, werr := l.f, l.werr
	l.mu.Unlock()
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = werr
	}
	return err
}

// markDone tells followers that the task's end has been recorded.
func (l *Log) markDone() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	l.broadcastLocked()
}

// snapshot returns the size of complete content, whether the final line
// was written (closed), whether the log is final (done), and a channel
// closed on the next change.
func (l *Log) snapshot() (size int64, lines int, closed, done bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size, l.lines, l.closed, l.done, l.changed
}
