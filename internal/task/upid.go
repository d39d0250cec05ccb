package task

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrInvalidUPID is wrapped by every error about a malformed UPID or a task
// spec whose fields could not form one.
var ErrInvalidUPID = errors.New("invalid UPID")

// Field limits. Every UPID fits in a single file name (255 bytes), which is
// how task logs are stored.
const (
	maxUPIDLen = 255
	maxNodeLen = 253
	maxTypeLen = 64
	maxIDLen   = 128
	maxUserLen = 128
)

// UPID is a unique process (task) identifier in the Proxmox format
//
//	UPID:node:PID:PSTART:STARTTIME:type:id:user:
//
// for example "UPID:pve1:00001234:0000ABCD:5F8C1D2E:vzstart:101:root@pam:".
//
// PID, PSTART and STARTTIME are upper-case hexadecimal, zero-padded to at
// least eight digits ("%08X"), as Proxmox writes them. The fields are:
//
//   - Node: an RFC 1123 host name: dot-separated labels of 1-63 letters,
//     digits and '-', not starting or ending with '-'.
//   - PID: the process ID of the daemon, 0 to 0x7FFFFFFF, exactly 8 digits.
//   - PStart: the process start time in clock ticks since boot (field 22 of
//     /proc/self/stat), 8 to 16 digits.
//   - StartTime: the task start time in Unix seconds, 8 to 16 digits.
//   - Type: 1-64 of [A-Za-z0-9_-], such as "qmstart" or "aptupdate".
//   - ID: 0-128 of [A-Za-z0-9_.-], usually a guest ID or empty.
//   - User: 1-128 of [A-Za-z0-9_.@!-], such as "root@pam", "alice@berth" or,
//     for an API token, "alice@berth!ci" (Proxmox's token notation; ':'
//     cannot be used because it separates the fields).
//
// No field can contain ':', '/', white space or any character that needs
// escaping in a URL path, so a UPID is a single path-safe segment and a
// valid file name. The whole string is at most 255 bytes.
//
// The textual form is canonical: ParseUPID accepts only what String
// produces (upper-case hex, no zero padding beyond eight digits), so two
// distinct strings never denote the same task.
type UPID struct {
	Node      string
	PID       int
	PStart    uint64
	StartTime int64
	Type      string
	ID        string
	User      string
}

// String returns the canonical textual form of u. It does not validate u;
// use Validate for that.
func (u UPID) String() string {
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:",
		u.Node, u.PID, u.PStart, u.StartTime, u.Type, u.ID, u.User)
}

// Validate reports whether every field of u is acceptable, so that String
// yields a UPID that ParseUPID accepts. The error wraps ErrInvalidUPID.
func (u UPID) Validate() error {
	if err := validNode(u.Node); err != nil {
		return err
	}
	if u.PID < 0 || u.PID > math.MaxInt32 {
		return fmt.Errorf("%w: PID %d out of range 0-%d", ErrInvalidUPID, u.PID, math.MaxInt32)
	}
	if u.StartTime < 0 {
		return fmt.Errorf("%w: start time %d is negative", ErrInvalidUPID, u.StartTime)
	}
	if err := validSpec(u.Type, u.ID, u.User); err != nil {
		return err
	}
	if n := len(u.String()); n > maxUPIDLen {
		return fmt.Errorf("%w: %d bytes long, at most %d allowed", ErrInvalidUPID, n, maxUPIDLen)
	}
	return nil
}

// ParseUPID parses the canonical form of a UPID. The error wraps
// ErrInvalidUPID and names the part that is wrong.
func ParseUPID(s string) (UPID, error) {
	if len(s) > maxUPIDLen {
		return UPID{}, fmt.Errorf("%w: %d bytes long, at most %d allowed", ErrInvalidUPID, len(s), maxUPIDLen)
	}
	if !strings.HasPrefix(s, "UPID:") {
		return UPID{}, fmt.Errorf("%w: %q does not start with \"UPID:\"", ErrInvalidUPID, s)
	}
	if !strings.HasSuffix(s, ":") {
		return UPID{}, fmt.Errorf("%w: %q does not end with ':'", ErrInvalidUPID, s)
	}
	parts := strings.Split(s, ":")
	// "UPID", node, pid, pstart, starttime, type, id, user, "".
	if len(parts) != 9 {
		return UPID{}, fmt.Errorf("%w: %q has %d ':'-separated fields, want 7 between \"UPID:\" and the final ':'",
			ErrInvalidUPID, s, len(parts)-2)
	}
	var u UPID
	u.Node = parts[1]
	if err := validNode(u.Node); err != nil {
		return UPID{}, err
	}
	pid, err := parseHex(parts[2], "PID", 8, 8)
	if err != nil {
		return UPID{}, err
	}
	if pid > math.MaxInt32 {
		return UPID{}, fmt.Errorf("%w: PID %s out of range 00000000-7FFFFFFF", ErrInvalidUPID, parts[2])
	}
	u.PID = int(pid)
	if u.PStart, err = parseHex(parts[3], "process start", 8, 16); err != nil {
		return UPID{}, err
	}
	st, err := parseHex(parts[4], "start time", 8, 16)
	if err != nil {
		return UPID{}, err
	}
	if st > math.MaxInt64 {
		return UPID{}, fmt.Errorf("%w: start time %s out of range", ErrInvalidUPID, parts[4])
	}
	u.StartTime = int64(st)
	u.Type, u.ID, u.User = parts[5], parts[6], parts[7]
	if err := validSpec(u.Type, u.ID, u.User); err != nil {
		return UPID{}, err
	}
	return u, nil
}

// parseHex parses a canonical upper-case hex number of minDigits to
// maxDigits digits, zero-padded only up to minDigits.
func parseHex(s, what string, minDigits, maxDigits int) (uint64, error) {
	if len(s) < minDigits || len(s) > maxDigits {
		if minDigits == maxDigits {
			return 0, fmt.Errorf("%w: %s %q must be exactly %d hex digits", ErrInvalidUPID, what, s, minDigits)
		}
		return 0, fmt.Errorf("%w: %s %q must be %d to %d hex digits", ErrInvalidUPID, what, s, minDigits, maxDigits)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'A' || c > 'F') {
			return 0, fmt.Errorf("%w: %s %q is not upper-case hex", ErrInvalidUPID, what, s)
		}
	}
	if len(s) > minDigits && s[0] == '0' {
		return 0, fmt.Errorf("%w: %s %q has leading zeros beyond %d digits", ErrInvalidUPID, what, s, minDigits)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q: %v", ErrInvalidUPID, what, s, err)
	}
	return v, nil
}

// validNode checks an RFC 1123 host name.
func validNode(s string) error {
	if s == "" {
		return fmt.Errorf("%w: node name is empty", ErrInvalidUPID)
	}
	if len(s) > maxNodeLen {
		return fmt.Errorf("%w: node name is %d bytes long, at most %d allowed", ErrInvalidUPID, len(s), maxNodeLen)
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w: node name %q: each dot-separated label must be 1-63 characters", ErrInvalidUPID, s)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: node name %q: a label must not start or end with '-'", ErrInvalidUPID, s)
		}
		for i := 0; i < len(label); i++ {
			if !isAlnum(label[i]) && label[i] != '-' {
				return fmt.Errorf("%w: node name %q: character %q not allowed in a host name", ErrInvalidUPID, s, label[i])
			}
		}
	}
	return nil
}

// validSpec checks the type, id and user fields.
func validSpec(typ, id, user string) error {
	if err := validField("type", typ, 1, maxTypeLen, "_-"); err != nil {
		return err
	}
	if err := validField("id", id, 0, maxIDLen, "_.-"); err != nil {
		return err
	}
	return validField("user", user, 1, maxUserLen, "_.@!-")
}

func validField(what, s string, minLen, maxLen int, extra string) error {
	if len(s) < minLen {
		return fmt.Errorf("%w: %s is empty", ErrInvalidUPID, what)
	}
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s is %d bytes long, at most %d allowed", ErrInvalidUPID, what, len(s), maxLen)
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && strings.IndexByte(extra, s[i]) < 0 {
			return fmt.Errorf("%w: %s %q: character %q not allowed (use letters, digits and %q)",
				ErrInvalidUPID, what, s, s[i], extra)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}
