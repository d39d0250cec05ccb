package ifupdown

import (
	"regexp"
	"slices"
	"strings"
)

// newline is the file's line terminator ("\r\n" if its first line uses it).
func (f *File) newline() string {
	for _, s := range f.Stanzas {
		for _, l := range s.Lines {
			if strings.HasSuffix(l.Raw, "\r\n") {
				return "\r\n"
			}
			if strings.HasSuffix(l.Raw, "\n") {
				return "\n"
			}
		}
	}
	return "\n"
}

// indent is the indentation of the stanza's options, else of any option in
// the file, else a tab (what Proxmox writes).
func (f *File) indent(s *Stanza) string {
	lead := func(st *Stanza) (string, bool) {
		for _, l := range st.Lines[1:] {
			if !l.Comment() {
				return l.Text[:len(l.Text)-len(strings.TrimLeft(l.Text, " \t"))], true
			}
		}
		return "", false
	}
	if s != nil {
		if in, ok := lead(s); ok && in != "" {
			return in
		}
	}
	for _, st := range f.Stanzas {
		if st.Kind == IfaceKind {
			if in, ok := lead(st); ok && in != "" {
				return in
			}
		}
	}
	return "\t"
}

func (f *File) newLine(text string) *Line {
	return &Line{Raw: text + f.newline(), Text: text}
}

// lastOption is the index in s.Lines after which a new option goes: the
// last option line, or the header.
func lastOption(s *Stanza) int {
	last := 0
	for i, l := range s.Lines {
		if i > 0 && !l.Comment() {
			last = i
		}
	}
	return last
}

// SetOption gives key the values on the stanza. Existing lines of key are
// rewritten in place (keeping their indentation), surplus ones removed, and
// missing ones added after the stanza's last option. Other lines stay as
// they are.
func (f *File) SetOption(s *Stanza, key string, values ...string) {
	in := f.indent(s)
	vi := 0
	kept := s.Lines[:0:0]
	for i, l := range s.Lines {
		if i == 0 || l.Comment() {
			kept = append(kept, l)
			continue
		}
		k, v := splitOption(l.Text)
		if k != key {
			kept = append(kept, l)
			continue
		}
		if vi >= len(values) {
			continue // surplus: dropped
		}
		if v != values[vi] {
			lead := l.Text[:len(l.Text)-len(strings.TrimLeft(l.Text, " \t"))]
			*l = Line{Raw: lead + key + " " + values[vi] + f.newline(), Num: l.Num, Text: lead + key + " " + values[vi]}
		}
		vi++
		kept = append(kept, l)
	}
	s.Lines = kept
	for ; vi < len(values); vi++ {
		at := lastOption(s) + 1
		f.ensureNewline(s, at-1)
		s.Lines = slices.Insert(s.Lines, at, f.newLine(in+key+" "+values[vi]))
	}
}

// ensureNewline makes sure the line at index i of s ends with a terminator
// before another line is put after it.
func (f *File) ensureNewline(s *Stanza, i int) {
	l := s.Lines[i]
	if !strings.HasSuffix(l.Raw, "\n") {
		l.Raw += f.newline()
	}
}

// DeleteOption removes every line of key from the stanza and reports
// whether there was one.
func (f *File) DeleteOption(s *Stanza, key string) bool {
	n := len(s.Lines)
	s.Lines = slices.DeleteFunc(s.Lines, func(l *Line) bool {
		if l == s.Lines[0] || l.Comment() {
			return false
		}
		k, _ := splitOption(l.Text)
		return k == key
	})
	return len(s.Lines) != n
}

// AddIface appends "auto NAME" (when auto) and an iface stanza with the
// options at the end of the file, after a blank line.
func (f *File) AddIface(name, family, method string, auto bool, opts []Option) *Stanza {
	last := f.Stanzas[len(f.Stanzas)-1]
	if len(last.Lines) > 0 {
		f.ensureNewline(last, len(last.Lines)-1)
		if !last.Lines[len(last.Lines)-1].Comment() || strings.TrimSpace(last.Lines[len(last.Lines)-1].Text) != "" {
			last.Lines = append(last.Lines, f.newLine(""))
		}
	}
	if auto {
		f.Stanzas = append(f.Stanzas, &Stanza{Kind: Auto, Keyword: "auto", Names: []string{name}, File: f, Lines: []*Line{f.newLine("auto " + name)}})
	}
	hdr := "iface " + name + " " + family + " " + method
	st := &Stanza{Kind: IfaceKind, Keyword: "iface", Names: []string{name}, Family: family, Method: method, File: f, Lines: []*Line{f.newLine(hdr)}}
	in := f.indent(nil)
	for _, o := range opts {
		st.Lines = append(st.Lines, f.newLine(in+o.Key+" "+o.Value))
	}
	f.Stanzas = append(f.Stanzas, st)
	return st
}

// SetMethod rewrites the iface header's family and method.
func (f *File) SetMethod(s *Stanza, family, method string) {
	if s.Family == family && s.Method == method {
		return
	}
	s.Family, s.Method = family, method
	h := s.Lines[0]
	lead := h.Text[:len(h.Text)-len(strings.TrimLeft(h.Text, " \t"))]
	text := lead + "iface " + s.Name() + " " + family + " " + method
	nl := ""
	if strings.HasSuffix(h.Raw, "\n") {
		nl = f.newline()
	}
	*h = Line{Raw: text + nl, Num: h.Num, Text: text}
}

// RemoveIface removes the iface stanzas of name (header, options and the
// comments between them; comments after the last option stay) and drops
// name from auto and allow lines. It reports whether anything changed.
func (f *File) RemoveIface(name string) bool {
	changed := f.SetAuto(name, false)
	f.setAllow(name)
	var out []*Stanza
	for i, s := range f.Stanzas {
		if s.Kind != IfaceKind || s.Name() != name {
			out = append(out, s)
			continue
		}
		changed = true
		rest := s.Lines[lastOption(s)+1:]
		// Keep trailing comments with the previous stanza; drop one blank
		// line so that removing a stanza does not leave two.
		if len(rest) > 0 && strings.TrimSpace(rest[0].Text) == "" && i > 0 && endsBlank(out) {
			rest = rest[1:]
		}
		if len(rest) > 0 && len(out) > 0 {
			prev := out[len(out)-1]
			prev.Lines = append(prev.Lines, rest...)
		}
	}
	f.Stanzas = out
	return changed
}

func endsBlank(ss []*Stanza) bool {
	if len(ss) == 0 {
		return true
	}
	ls := ss[len(ss)-1].Lines
	return len(ls) == 0 || strings.TrimSpace(ls[len(ls)-1].Text) == ""
}

// SetAuto adds or removes name on the file's auto lines: removal rewrites
// each auto line without the name (dropping lines left empty); addition
// puts "auto NAME" before the first iface stanza of name. It reports
// whether anything changed.
func (f *File) SetAuto(name string, auto bool) bool {
	has := false
	changed := false
	var out []*Stanza
	for _, s := range f.Stanzas {
		if s.Kind == Auto && slices.Contains(s.Names, name) {
			if auto {
				has = true
			} else {
				changed = true
				if !f.dropName(s, name) {
					f.orphan(&out, s)
					continue
				}
			}
		}
		out = append(out, s)
	}
	f.Stanzas = out
	if auto && !has {
		for i, s := range f.Stanzas {
			if s.Kind == IfaceKind && s.Name() == name {
				st := &Stanza{Kind: Auto, Keyword: "auto", Names: []string{name}, File: f, Lines: []*Line{f.newLine("auto " + name)}}
				f.Stanzas = slices.Insert(f.Stanzas, i, st)
				return true
			}
		}
	}
	return changed
}

// setAllow drops name from allow-* lines.
func (f *File) setAllow(name string) {
	var out []*Stanza
	for _, s := range f.Stanzas {
		if s.Kind == Allow && slices.Contains(s.Names, name) && !f.dropName(s, name) {
			f.orphan(&out, s)
			continue
		}
		out = append(out, s)
	}
	f.Stanzas = out
}

// orphan keeps the comment lines of a dropped header line with the
// previous stanza.
func (f *File) orphan(out *[]*Stanza, s *Stanza) {
	rest := s.Lines[1:]
	if len(rest) == 0 {
		return
	}
	if len(*out) == 0 {
		*out = append(*out, &Stanza{Kind: Preamble, File: f})
	}
	prev := (*out)[len(*out)-1]
	prev.Lines = append(prev.Lines, rest...)
}

// dropName rewrites an auto/allow header without name; false means no
// names are left and the header should go.
func (f *File) dropName(s *Stanza, name string) bool {
	s.Names = slices.DeleteFunc(slices.Clone(s.Names), func(n string) bool { return n == name })
	if len(s.Names) == 0 {
		return false
	}
	h := s.Lines[0]
	text := s.Keyword + " " + strings.Join(s.Names, " ")
	nl := ""
	if strings.HasSuffix(h.Raw, "\n") {
		nl = f.newline()
	}
	*h = Line{Raw: text + nl, Num: h.Num, Text: text}
	return true
}

var optionKey = regexp.MustCompile(`^[a-z0-9][a-z0-9_+.-]*$`)

// ValidKey reports whether key can be written as an option: lower-case
// words with dashes, and not a stanza keyword.
func ValidKey(key string) bool {
	switch {
	case !optionKey.MatchString(key), key == "iface", key == "auto", key == "mapping",
		key == "source", key == "source-directory", key == "no-auto-down", key == "no-scripts",
		strings.HasPrefix(key, "allow-"):
		return false
	}
	return true
}

// ValidValue reports whether value can be written on one option line: not
// empty, one line, no surrounding space, no trailing backslash.
func ValidValue(value string) bool {
	return value != "" && strings.TrimSpace(value) == value && !strings.ContainsAny(value, "\r\n\x00") && !strings.HasSuffix(value, "\\")
}
