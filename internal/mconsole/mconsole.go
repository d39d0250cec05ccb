// Package mconsole is a client for the User Mode Linux management console:
// it sends a command (version, halt, reboot, cad, stop, go, sysrq, config,
// proc, …) to a UML kernel's mconsole datagram socket and collects the
// reply. It knows nothing of berth's guests.
package mconsole

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Protocol constants from the kernel's arch/um/include/shared/mconsole.h.
const (
	Magic   = 0xcafebabe
	Version = 2
	MaxData = 512
)

// RequestSize and the reply header size.
const (
	RequestSize = 12 + MaxData
	headerSize  = 12
)

// EncodeRequest builds a request datagram for cmd.
func EncodeRequest(cmd string) ([]byte, error) {
	if len(cmd) >= MaxData {
		return nil, fmt.Errorf("mconsole: command is %d bytes, the limit is %d", len(cmd), MaxData-1)
	}
	if strings.ContainsRune(cmd, 0) {
		return nil, errors.New("mconsole: command contains a NUL byte")
	}
	b := make([]byte, RequestSize)
	binary.NativeEndian.PutUint32(b[0:], Magic)
	binary.NativeEndian.PutUint32(b[4:], Version)
	binary.NativeEndian.PutUint32(b[8:], uint32(len(cmd)))
	copy(b[12:], cmd)
	return b, nil
}

// Reply is one reply datagram.
type Reply struct {
	// Err is non-zero when the kernel refused the command.
	Err uint32
	// More says further datagrams follow.
	More bool
	Data string
}

// DecodeReply parses a reply datagram.
func DecodeReply(b []byte) (Reply, error) {
	if len(b) < headerSize {
		return Reply{}, fmt.Errorf("mconsole: reply of %d bytes is shorter than its header", len(b))
	}
	r := Reply{Err: binary.NativeEndian.Uint32(b[0:]), More: binary.NativeEndian.Uint32(b[4:]) != 0}
	n := binary.NativeEndian.Uint32(b[8:])
	if n > MaxData || int(n) > len(b)-headerSize {
		return Reply{}, fmt.Errorf("mconsole: reply claims %d data bytes, has %d", n, len(b)-headerSize)
	}
	data := b[headerSize : headerSize+int(n)]
	if i := bytes.IndexByte(data, 0); i >= 0 {
		data = data[:i]
	}
	r.Data = string(data)
	return r, nil
}

// Error is a command the kernel answered with an error.
type Error struct {
	Command, Message string
}

func (e *Error) Error() string { return fmt.Sprintf("mconsole %s: %s", e.Command, e.Message) }

// Send runs cmd on the UML whose mconsole socket is socket and returns the
// reply text. ctx bounds the wait (a default of 10 seconds applies when it
// has no deadline). Commands that end the kernel (halt, reboot) may get
// no reply: see SendNoWait.
func Send(ctx context.Context, socket, cmd string) (string, error) {
	return send(ctx, socket, cmd, true)
}

// SendNoWait sends cmd and returns once it is delivered, without waiting
// for a reply.
func SendNoWait(ctx context.Context, socket, cmd string) error {
	_, err := send(ctx, socket, cmd, false)
	return err
}

func send(ctx context.Context, socket, cmd string, wait bool) (string, error) {
	req, err := EncodeRequest(cmd)
	if err != nil {
		return "", err
	}
	var id [8]byte
	rand.Read(id[:])
	// An abstract address: nothing to clean up, and the kernel can reply
	// to it whatever user it runs as.
	local := &net.UnixAddr{Name: "@berth-mconsole-" + hex.EncodeToString(id[:]), Net: "unixgram"}
	conn, err := net.ListenUnixgram("unixgram", local)
	if err != nil {
		return "", fmt.Errorf("mconsole: %w", err)
	}
	defer conn.Close()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.WriteToUnix(req, &net.UnixAddr{Name: socket, Net: "unixgram"}); err != nil {
		return "", fmt.Errorf("mconsole: send %q to %s: %w", cmd, socket, err)
	}
	if !wait {
		return "", nil
	}
	var out strings.Builder
	buf := make([]byte, headerSize+MaxData+16)
	partial := false
	for {
		if partial {
			// Commands that print through the kernel's console (sysrq)
			// may send their final part before the printed lines: once
			// parts flow, a second of silence ends the reply.
			idle := time.Now().Add(time.Second)
			if idle.Before(dl) {
				conn.SetReadDeadline(idle)
			}
		}
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil {
			if partial && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil && time.Now().Before(dl) {
				return out.String(), nil
			}
			return out.String(), fmt.Errorf("mconsole: reply to %q: %w", cmd, err)
		}
		r, err := DecodeReply(buf[:n])
		if err != nil {
			return out.String(), err
		}
		out.WriteString(r.Data)
		if r.Err != 0 {
			return out.String(), &Error{Command: cmd, Message: strings.TrimSpace(out.String())}
		}
		if !r.More {
			return out.String(), nil
		}
		partial = true
	}
}
