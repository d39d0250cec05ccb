// Package bootptab reads /etc/bootptab, the host database of bootpd
// (bootptab(5)): entries "name:tag=value:…" whose logical lines continue
// after a trailing backslash (also after a trailing ':' or '=', as in
// hand-wrapped listings, or when the next line starts with ':'), with
// tc= template references resolved in any order and "tag@" removing a
// template's value. It turns entries with a hardware address into netboot
// host entries; everything else it cannot read is reported with its line.
package bootptab

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/netboot/hostdb"
)

type field struct {
	text string
	line int
}

type entry struct {
	name   string
	line   int
	fields []field
}

// MaxLine bounds a physical line; longer input is reported, not read.
const MaxLine = 64 << 10

// Parse reads a bootptab file. It returns the hosts it could read and one
// error per entry or line it could not.
func Parse(r io.Reader) ([]wire.NetbootHost, []hostdb.LineError) {
	var errs []hostdb.LineError
	var entries []*entry
	var cur *entry
	cont, dangling := false, false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), MaxLine)
	n := 0
	for sc.Scan() {
		n++
		t := strings.TrimSpace(sc.Text())
		if t == "" || t[0] == '#' {
			cont, dangling = false, false
			continue
		}
		backslash := strings.HasSuffix(t, `\`)
		t = strings.TrimSpace(strings.TrimSuffix(t, `\`))
		fs, err := split(t)
		if err != nil {
			errs = append(errs, hostdb.LineError{Line: n, Msg: err.Error()})
			cur, cont, dangling = nil, backslash, false
			continue
		}
		if cur == nil || !(cont || strings.HasPrefix(t, ":")) {
			if len(fs) == 0 || fs[0] == "" {
				errs = append(errs, hostdb.LineError{Line: n, Msg: "entry has no name: an entry starts with NAME:"})
				cur, cont, dangling = nil, backslash, false
				continue
			}
			cur = &entry{name: fs[0], line: n}
			entries = append(entries, cur)
			fs = fs[1:]
		}
		for i, f := range fs {
			if i == 0 && dangling && len(cur.fields) > 0 {
				cur.fields[len(cur.fields)-1].text += f
				continue
			}
			if f != "" {
				cur.fields = append(cur.fields, field{f, n})
			}
		}
		dangling = strings.HasSuffix(t, "=")
		cont = backslash || dangling || strings.HasSuffix(t, ":")
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, hostdb.LineError{Line: n + 1, Msg: "cannot read: " + err.Error()})
	}
	byName := map[string]*entry{}
	for _, e := range entries {
		if _, dup := byName[e.name]; dup {
			errs = append(errs, hostdb.LineError{Line: e.line, Msg: fmt.Sprintf("entry %q is defined twice", e.name)})
			continue
		}
		byName[e.name] = e
	}
	var hosts []wire.NetbootHost
	for _, e := range entries {
		if byName[e.name] != e {
			continue
		}
		tags, err := resolve(e, byName, 0)
		if err != nil {
			errs = append(errs, *err)
			continue
		}
		ha, ok := tags["ha"]
		if !ok {
			continue // a template
		}
		h, err := host(e, tags, ha)
		if err != nil {
			errs = append(errs, *err)
			continue
		}
		hosts = append(hosts, h)
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return hosts, errs
}

// split cuts a line at ':' outside double quotes.
func split(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	quoted := false
	for _, c := range s {
		switch {
		case c == '"':
			quoted = !quoted
			b.WriteRune(c)
		case c == ':' && !quoted:
			out = append(out, strings.TrimSpace(b.String()))
			b.Reset()
		default:
			b.WriteRune(c)
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quoted string")
	}
	return append(out, strings.TrimSpace(b.String())), nil
}

type tagval struct {
	val  string
	line int
}

// resolve returns the entry's tags with its tc= template applied first.
func resolve(e *entry, byName map[string]*entry, depth int) (map[string]tagval, *hostdb.LineError) {
	if depth > 16 {
		return nil, &hostdb.LineError{Line: e.line, Msg: fmt.Sprintf("tc= templates of %q nest too deep (a loop?)", e.name)}
	}
	tags := map[string]tagval{}
	for _, f := range e.fields {
		if v, ok := strings.CutPrefix(f.text, "tc="); ok {
			t, ok := byName[unquote(v)]
			if !ok {
				return nil, &hostdb.LineError{Line: f.line, Msg: fmt.Sprintf("tc=%s: no entry of that name in the file", v)}
			}
			base, err := resolve(t, byName, depth+1)
			if err != nil {
				return nil, err
			}
			for k, v := range base {
				tags[k] = v
			}
		}
	}
	for _, f := range e.fields {
		name, val, hasVal := strings.Cut(f.text, "=")
		name = strings.TrimSpace(name)
		if name == "tc" {
			continue
		}
		if r, ok := strings.CutSuffix(name, "@"); ok {
			delete(tags, r)
			continue
		}
		if name == "" || strings.ContainsAny(name, " \t\"") {
			return nil, &hostdb.LineError{Line: f.line, Msg: fmt.Sprintf("%q is not tag=value", f.text)}
		}
		if !hasVal {
			tags[name] = tagval{"", f.line} // a boolean tag such as hn
			continue
		}
		tags[name] = tagval{unquote(strings.TrimSpace(val)), f.line}
	}
	return tags, nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// parseHA reads a bootptab hardware address: hex with optional '.', ':'
// or '-' separators, optionally 0x-prefixed.
func parseHA(s string) (net.HardwareAddr, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if strings.ContainsAny(s, ":-") {
		return net.ParseMAC(s)
	}
	s = strings.ReplaceAll(s, ".", "")
	if len(s) != 12 {
		return nil, fmt.Errorf("want 12 hex digits")
	}
	mac := make(net.HardwareAddr, 6)
	for i := range mac {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		mac[i] = byte(v)
	}
	return mac, nil
}

func host(e *entry, tags map[string]tagval, ha tagval) (wire.NetbootHost, *hostdb.LineError) {
	mac, err := parseHA(ha.val)
	if err != nil {
		return wire.NetbootHost{}, &hostdb.LineError{Line: ha.line, Msg: fmt.Sprintf("ha=%s: not an Ethernet address (%v)", ha.val, err)}
	}
	name := e.name
	h := wire.NetbootHost{MAC: mac.String(), Name: name, IP: tags["ip"].val, NextServer: tags["sa"].val, RootPath: tags["rp"].val,
		Comment: fmt.Sprintf("imported from bootptab entry %s", name)}
	if ht, ok := tags["ht"]; ok && ht.val != "" && ht.val != "1" && ht.val != "ethernet" && ht.val != "ether" && ht.val != "ethernet2" {
		return h, &hostdb.LineError{Line: ht.line, Msg: fmt.Sprintf("ht=%s: only Ethernet hardware is supported", ht.val)}
	}
	if bf := tags["bf"].val; bf != "" {
		if hd := tags["hd"].val; hd != "" && !strings.HasPrefix(bf, "/") {
			bf = strings.TrimSuffix(hd, "/") + "/" + bf
		}
		h.BootFile = bf
	}
	for k, tv := range tags {
		if len(k) > 1 && k[0] == 'T' {
			if code, err := strconv.Atoi(k[1:]); err == nil {
				if h.Options == nil {
					h.Options = map[string]string{}
				}
				h.Options[strconv.Itoa(code)] = tv.val
			}
		}
	}
	for tag, code := range map[string]string{"gw": "3", "ds": "6", "dn": "15"} {
		if tv, ok := tags[tag]; ok && tv.val != "" {
			if h.Options == nil {
				h.Options = map[string]string{}
			}
			h.Options[code] = strings.Join(strings.Fields(tv.val), ",")
		}
	}
	nh, err := hostdb.Normalize(h)
	if err != nil {
		line := e.line
		if ve, ok := err.(*hostdb.ValidationError); ok {
			for f := range ve.Fields {
				if tv, ok := tags[map[string]string{"ip": "ip", "next-server": "sa", "bootfile": "bf", "root-path": "rp"}[f]]; ok {
					line = tv.line
				}
			}
		}
		return h, &hostdb.LineError{Line: line, Msg: fmt.Sprintf("entry %s: %v", name, err)}
	}
	return nh, nil
}
