package mconsole

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"testing"
)

func reply(err, more uint32, data string) []byte {
	b := make([]byte, headerSize+MaxData)
	binary.NativeEndian.PutUint32(b[0:], err)
	binary.NativeEndian.PutUint32(b[4:], more)
	binary.NativeEndian.PutUint32(b[8:], uint32(len(data)))
	copy(b[12:], data)
	return b
}

func TestEncodeDecode(t *testing.T) {
	b, err := EncodeRequest("version")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != RequestSize || binary.NativeEndian.Uint32(b) != Magic || binary.NativeEndian.Uint32(b[8:]) != 7 || !bytes.HasPrefix(b[12:], []byte("version")) {
		t.Errorf("bad request %x", b[:24])
	}
	if _, err := EncodeRequest(string(make([]byte, MaxData))); err == nil {
		t.Error("oversized command accepted")
	}
	r, err := DecodeReply(reply(1, 1, "hello"))
	if err != nil || r.Err != 1 || !r.More || r.Data != "hello" {
		t.Errorf("DecodeReply = %+v, %v", r, err)
	}
	bad := reply(0, 0, "x")
	binary.NativeEndian.PutUint32(bad[8:], 9999)
	if _, err := DecodeReply(bad); err == nil {
		t.Error("overlong length accepted")
	}
	if _, err := DecodeReply([]byte{1, 2}); err == nil {
		t.Error("short reply accepted")
	}
}

// TestSend runs the client against a datagram server that answers like
// a UML kernel (the real kernel is exercised by the uml package's system
// tests): a reply in two parts, then an error reply.
func TestSend(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "mconsole")
	srv, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, RequestSize)
		for {
			n, from, err := srv.ReadFromUnix(buf)
			if err != nil {
				return
			}
			cmd := string(buf[12 : 12+binary.NativeEndian.Uint32(buf[8:n])])
			switch cmd {
			case "version":
				srv.WriteToUnix(reply(0, 1, "Linux "), from)
				srv.WriteToUnix(reply(0, 0, "6.1.0"), from)
			default:
				srv.WriteToUnix(reply(1, 0, "Unknown command"), from)
			}
		}
	}()
	ctx := context.Background()
	got, err := Send(ctx, sock, "version")
	if err != nil || got != "Linux 6.1.0" {
		t.Errorf("version = %q, %v", got, err)
	}
	_, err = Send(ctx, sock, "frobnicate")
	var me *Error
	if !errors.As(err, &me) || me.Message != "Unknown command" {
		t.Errorf("bad command: %v", err)
	}
	if _, err := Send(ctx, filepath.Join(t.TempDir(), "none"), "version"); err == nil {
		t.Error("send to a missing socket succeeded")
	}
}

func FuzzDecodeReply(f *testing.F) {
	f.Add(reply(0, 0, "OK"))
	f.Add(reply(1, 1, "more"))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReply(b)
		if err == nil && len(r.Data) > MaxData {
			t.Fatalf("data of %d bytes", len(r.Data))
		}
	})
}
