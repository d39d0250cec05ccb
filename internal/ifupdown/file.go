package ifupdown

import (
	"bytes"
	"fmt"
	"strings"
)

// Kind says what a stanza is.
type Kind int

// Stanza kinds.
const (
	// Preamble holds the comments and blank lines before the first stanza.
	Preamble Kind = iota
	// Auto is "auto NAME…" or "allow-auto NAME…".
	Auto
	// Allow is "allow-CLASS NAME…" (allow-hotplug and others), and
	// ifupdown's "no-auto-down" and "no-scripts" lines.
	Allow
	// IfaceKind is "iface NAME [FAMILY [METHOD]]" with its options.
	IfaceKind
	// Mapping is "mapping PATTERN…" with its script and map lines.
	Mapping
	// Source is "source PATTERN".
	Source
	// SourceDir is "source-directory DIR".
	SourceDir
)

// Line is one logical line of a file: a physical line, or several joined
// by trailing backslashes.
type Line struct {
	// Raw is the exact text, line terminators included.
	Raw string
	// Num is the 1-based number of its first physical line.
	Num int
	// Text is the content with continuations joined and the terminator
	// removed.
	Text string
}

// Comment reports whether the line is blank or a comment.
func (l *Line) Comment() bool {
	t := strings.TrimSpace(l.Text)
	return t == "" || t[0] == '#'
}

// Option is one "key value" line inside an iface or mapping stanza.
type Option struct {
	Key, Value string
	Line       *Line
}

// Stanza is a header line with the lines that follow it up to the next
// header: options, comments and blank lines.
type Stanza struct {
	Kind Kind
	// Lines start with the header (except for the Preamble).
	Lines []*Line
	// Keyword is the header's first word (auto, allow-hotplug, iface…).
	Keyword string
	// Names are the interfaces of auto/allow lines, or the iface's name
	// alone.
	Names []string
	// Family and Method of an iface stanza ("inet", "static"); empty
	// when the header leaves them out.
	Family, Method string
	// Arg is the path or pattern of source and source-directory.
	Arg string
	// File is the file the stanza was read from.
	File *File
}

// Name is the iface stanza's interface name.
func (s *Stanza) Name() string {
	if len(s.Names) == 0 {
		return ""
	}
	return s.Names[0]
}

// Options returns the stanza's option lines in order.
func (s *Stanza) Options() []Option {
	var out []Option
	for _, l := range s.Lines[1:] {
		if l.Comment() {
			continue
		}
		k, v := splitOption(l.Text)
		out = append(out, Option{Key: k, Value: v, Line: l})
	}
	return out
}

// Header is the stanza's first line (nil for the Preamble).
func (s *Stanza) Header() *Line {
	if s.Kind == Preamble || len(s.Lines) == 0 {
		return nil
	}
	return s.Lines[0]
}

// File is one parsed interfaces file.
type File struct {
	// Path names the file in messages.
	Path    string
	Stanzas []*Stanza
}

// SyntaxError is a line the parser cannot place.
type SyntaxError struct {
	Path string
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Msg) }

// FieldErrors names the line for the API's per-field errors.
func (e *SyntaxError) FieldErrors() map[string]string {
	return map[string]string{fmt.Sprintf("%s:%d", e.Path, e.Line): e.Msg}
}

func splitOption(text string) (key, value string) {
	t := strings.TrimSpace(text)
	i := strings.IndexAny(t, " \t")
	if i < 0 {
		return t, ""
	}
	return t[:i], strings.TrimSpace(t[i:])
}

// splitLines cuts data into logical lines, keeping every byte.
func splitLines(data []byte) []*Line {
	var out []*Line
	num := 1
	for len(data) > 0 {
		start := num
		var raw, text strings.Builder
		for {
			i := bytes.IndexByte(data, '\n')
			var phys []byte
			if i < 0 {
				phys, data = data, nil
			} else {
				phys, data = data[:i+1], data[i+1:]
			}
			raw.Write(phys)
			num++
			body := strings.TrimSuffix(strings.TrimSuffix(string(phys), "\n"), "\r")
			if strings.HasSuffix(body, "\\") && len(data) > 0 && !strings.HasPrefix(strings.TrimSpace(body), "#") {
				text.WriteString(strings.TrimSuffix(body, "\\"))
				continue
			}
			text.WriteString(body)
			break
		}
		out = append(out, &Line{Raw: raw.String(), Num: start, Text: text.String()})
	}
	return out
}

// Parse reads one interfaces file. It rejects only what cannot be placed
// (an option outside an iface or mapping stanza, a header without its
// arguments); Validate judges the meaning.
func Parse(path string, data []byte) (*File, error) {
	f := &File{Path: path}
	cur := &Stanza{Kind: Preamble, File: f}
	f.Stanzas = append(f.Stanzas, cur)
	for _, l := range splitLines(data) {
		if l.Comment() {
			cur.Lines = append(cur.Lines, l)
			continue
		}
		words := strings.Fields(l.Text)
		kw := words[0]
		st := &Stanza{Keyword: kw, Lines: []*Line{l}, File: f}
		switch {
		case kw == "iface":
			if len(words) < 2 {
				return nil, &SyntaxError{path, l.Num, "iface without an interface name: write 'iface NAME inet static'"}
			}
			st.Kind = IfaceKind
			st.Names = []string{words[1]}
			if len(words) > 2 {
				st.Family = words[2]
			}
			if len(words) > 3 {
				st.Method = words[3]
			}
			if len(words) > 4 && words[4] != "inherits" {
				return nil, &SyntaxError{path, l.Num, fmt.Sprintf("iface %s: unexpected %q after the method: write 'iface NAME FAMILY METHOD'", words[1], strings.Join(words[4:], " "))}
			}
		case kw == "auto" || kw == "allow-auto":
			st.Kind = Auto
			st.Names = words[1:]
		case strings.HasPrefix(kw, "allow-") || kw == "no-auto-down" || kw == "no-scripts":
			st.Kind = Allow
			st.Names = words[1:]
		case kw == "mapping":
			if len(words) < 2 {
				return nil, &SyntaxError{path, l.Num, "mapping without a pattern"}
			}
			st.Kind = Mapping
			st.Names = words[1:]
		case kw == "source" || kw == "source-directory":
			if len(words) < 2 {
				return nil, &SyntaxError{path, l.Num, kw + " without a path"}
			}
			st.Kind = Source
			if kw == "source-directory" {
				st.Kind = SourceDir
			}
			st.Arg = strings.TrimSpace(strings.TrimSpace(l.Text)[len(kw):])
		default:
			if cur.Kind != IfaceKind && cur.Kind != Mapping {
				return nil, &SyntaxError{path, l.Num, fmt.Sprintf("option %q outside an iface stanza: put it under 'iface NAME …' (indented)", kw)}
			}
			cur.Lines = append(cur.Lines, l)
			continue
		}
		f.Stanzas = append(f.Stanzas, st)
		cur = st
	}
	return f, nil
}

// Bytes writes the file back: the raw text of every line in order.
func (f *File) Bytes() []byte {
	var b bytes.Buffer
	for _, s := range f.Stanzas {
		for _, l := range s.Lines {
			b.WriteString(l.Raw)
		}
	}
	return b.Bytes()
}

// Ifaces returns the file's iface stanzas named name.
func (f *File) Ifaces(name string) []*Stanza {
	var out []*Stanza
	for _, s := range f.Stanzas {
		if s.Kind == IfaceKind && s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}
