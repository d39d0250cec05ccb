package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Opcodes of RFC 1350 and RFC 2347.
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes of RFC 1350 and RFC 2347.
const (
	errNotDefined      = 0
	errFileNotFound    = 1
	errAccessViolation = 2
	errDiskFull        = 3
	errIllegalOp       = 4
	errUnknownTID      = 5
	errFileExists      = 6
	errNoSuchUser      = 7
	errOptionRefused   = 8
)

// Protocol limits.
const (
	defaultBlockSize = 512
	minBlockSize     = 8     // RFC 2348
	maxBlockSize     = 65464 // RFC 2348
	maxWindowSize    = 65535 // RFC 7440
	maxPacket        = 4 + maxBlockSize
)

// request is a parsed read or write request.
type request struct {
	Op       uint16
	Filename string
	Mode     string            // lower-cased: "octet", "netascii" or "mail"
	Options  map[string]string // lower-cased option names, in any order
	Order    []string          // option names in the order the client sent them
}

// errMalformed marks packets that are not valid TFTP.
var errMalformed = errors.New("malformed packet")

// parseRequest parses an RRQ or WRQ packet. It is strict about structure
// (NUL-terminated fields, an even number of option fields) and never panics
// on any input; the fuzz test holds it to that.
func parseRequest(b []byte) (request, error) {
	var r request
	if len(b) < 4 {
		return r, fmt.Errorf("%w: %d bytes is too short for a request", errMalformed, len(b))
	}
	r.Op = binary.BigEndian.Uint16(b)
	if r.Op != opRRQ && r.Op != opWRQ {
		return r, fmt.Errorf("%w: opcode %d is not a request", errMalformed, r.Op)
	}
	fields, err := splitFields(b[2:])
	if err != nil {
		return r, err
	}
	if len(fields) < 2 {
		return r, fmt.Errorf("%w: request needs a file name and a mode", errMalformed)
	}
	if len(fields)%2 != 0 {
		// Some old clients pad requests with a trailing NUL; an empty last
		// field is tolerated, any other odd field is not.
		if fields[len(fields)-1] != "" {
			return r, fmt.Errorf("%w: option %q has no value", errMalformed, fields[len(fields)-1])
		}
		fields = fields[:len(fields)-1]
	}
	r.Filename = fields[0]
	r.Mode = strings.ToLower(fields[1])
	if r.Filename == "" {
		return r, fmt.Errorf("%w: empty file name", errMalformed)
	}
	switch r.Mode {
	case "octet", "netascii", "mail":
	default:
		return r, fmt.Errorf("%w: unknown transfer mode %q", errMalformed, fields[1])
	}
	for i := 2; i+1 < len(fields); i += 2 {
		name := strings.ToLower(fields[i])
		if name == "" {
			return r, fmt.Errorf("%w: empty option name", errMalformed)
		}
		if r.Options == nil {
			r.Options = make(map[string]string)
		}
		if _, dup := r.Options[name]; dup {
			return r, fmt.Errorf("%w: option %q given twice", errMalformed, name)
		}
		r.Options[name] = fields[i+1]
		r.Order = append(r.Order, name)
	}
	return r, nil
}

// splitFields splits NUL-terminated strings. The last field must be
// terminated too.
func splitFields(b []byte) ([]string, error) {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return nil, fmt.Errorf("%w: request is not NUL-terminated", errMalformed)
	}
	var out []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		out = append(out, string(b[:i]))
		b = b[i+1:]
		if len(out) > 64 {
			return nil, fmt.Errorf("%w: too many fields", errMalformed)
		}
	}
	return out, nil
}

// parseAck returns the block number of an ACK packet, or, for an ERROR
// packet, isErr with its code and message.
func parseAck(b []byte) (block uint16, isErr bool, code uint16, msg string, err error) {
	if len(b) < 4 {
		return 0, false, 0, "", fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	switch binary.BigEndian.Uint16(b) {
	case opACK:
		return binary.BigEndian.Uint16(b[2:]), false, 0, "", nil
	case opERROR:
		m := b[4:]
		if i := bytes.IndexByte(m, 0); i >= 0 {
			m = m[:i]
		}
		return 0, true, binary.BigEndian.Uint16(b[2:]), string(m), nil
	default:
		return 0, false, 0, "", fmt.Errorf("%w: opcode %d where an ACK was expected", errMalformed, binary.BigEndian.Uint16(b))
	}
}

// appendError appends an ERROR packet.
func appendError(dst []byte, code uint16, msg string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, opERROR)
	dst = binary.BigEndian.AppendUint16(dst, code)
	dst = append(dst, msg...)
	return append(dst, 0)
}

// appendOACK appends an OACK packet with the options in the given order.
func appendOACK(dst []byte, names []string, values map[string]string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, opOACK)
	for _, n := range names {
		dst = append(dst, n...)
		dst = append(dst, 0)
		dst = append(dst, values[n]...)
		dst = append(dst, 0)
	}
	return dst
}

// options are the negotiated transfer parameters.
type options struct {
	blksize  int
	window   int
	timeout  int // seconds, 0 = server default
	tsize    bool
	accepted []string          // option names to acknowledge, in client order
	values   map[string]string // their acknowledged values
}

// negotiate applies RFC 2347/2348/2349/7440 to the request's options.
// Unknown or out-of-range options are left out of the OACK, as RFC 2347
// asks, except that blksize and windowsize above the server's limits are
// lowered to them. size is the file size for tsize.
func negotiate(r request, maxBlk, maxWindowBytes int, size int64) options {
	o := options{blksize: defaultBlockSize, window: 1, values: map[string]string{}}
	for _, name := range r.Order {
		v := r.Options[name]
		switch name {
		case "blksize":
			n, err := strconv.Atoi(v)
			if err != nil || n < minBlockSize {
				continue
			}
			if n > maxBlk {
				n = maxBlk
			}
			o.blksize = n
			o.values[name] = strconv.Itoa(n)
		case "timeout":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 255 {
				continue
			}
			o.timeout = n
			o.values[name] = v
		case "tsize":
			if size < 0 {
				continue
			}
			o.tsize = true
			o.values[name] = strconv.FormatInt(size, 10)
		case "windowsize":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxWindowSize {
				continue
			}
			o.window = n
			o.values[name] = "" // filled in below, once blksize is known
		default:
			continue
		}
		o.accepted = append(o.accepted, name)
	}
	if _, ok := o.values["windowsize"]; ok {
		// RFC 7440 lets the server answer a smaller window. A window larger
		// than the client's socket buffer can hold is lost in bursts and
		// collapses into timeouts, so the window is capped in bytes.
		if maxWindowBytes > 0 {
			if lim := maxWindowBytes / o.blksize; o.window > lim {
				o.window = max(lim, 1)
			}
		}
		o.values["windowsize"] = strconv.Itoa(o.window)
	}
	return o
}
