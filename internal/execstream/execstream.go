// Package execstream is the framing of berth's exec and console streams
// (api.ExecFrame*): after the HTTP upgrade, both sides exchange frames of a
// type byte, a 4-byte big-endian payload length and the payload. It only
// frames bytes; what runs is the container driver's business.
package execstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// MaxPayload bounds one frame's payload (1 MiB).
const MaxPayload = 1 << 20

// ErrTooLarge is returned for a frame announcing more than MaxPayload.
var ErrTooLarge = errors.New("exec stream: frame larger than 1 MiB")

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	if len(payload) > MaxPayload {
		return ErrTooLarge
	}
	buf := make([]byte, 5+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame. A stream that ends between frames returns
// io.EOF; one that ends inside a frame io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("%w (%d bytes announced)", ErrTooLarge, n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], p, nil
}

// Writer sends everything written to it as frames of one type. Writers
// sharing a Mutex interleave whole frames safely.
type Writer struct {
	Mu  *sync.Mutex
	W   io.Writer
	Typ byte
}

// Write sends p as one or more frames.
func (w *Writer) Write(p []byte) (int, error) {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	done := 0
	for done < len(p) {
		chunk := p[done:min(len(p), done+MaxPayload)]
		if err := WriteFrame(w.W, w.Typ, chunk); err != nil {
			return done, err
		}
		done += len(chunk)
	}
	return done, nil
}
