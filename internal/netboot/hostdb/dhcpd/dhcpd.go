// Package dhcpd reads the host declarations of an ISC dhcpd.conf:
// "host NAME { hardware ethernet MAC; fixed-address IP; filename "…";
// next-server IP; option root-path "…"; … }", wherever they appear (at
// the top or inside group, subnet and shared-network blocks, whose
// filename, next-server and options they inherit). Other statements are
// passed over; what it cannot read is reported with its line number.
package dhcpd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/netboot/hostdb"
)

type token struct {
	text   string
	line   int
	quoted bool
}

// MaxInput bounds the file size Parse reads.
const MaxInput = 16 << 20

func lex(r io.Reader) ([]token, []hostdb.LineError) {
	var toks []token
	var errs []hostdb.LineError
	br := bufio.NewReader(io.LimitReader(r, MaxInput))
	line := 1
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			toks = append(toks, token{text: cur.String(), line: line})
			cur.Reset()
		}
	}
	for {
		c, err := br.ReadByte()
		if err != nil {
			break
		}
		switch {
		case c == '\n':
			flush()
			line++
		case c == '#':
			flush()
			for {
				c, err := br.ReadByte()
				if err != nil || c == '\n' {
					line++
					break
				}
			}
		case c == '"':
			flush()
			start := line
			var s strings.Builder
			closed := false
			for {
				c, err := br.ReadByte()
				if err != nil {
					break
				}
				if c == '\\' {
					if n, err := br.ReadByte(); err == nil {
						s.WriteByte(n)
					}
					continue
				}
				if c == '"' {
					closed = true
					break
				}
				if c == '\n' {
					line++
				}
				s.WriteByte(c)
			}
			if !closed {
				errs = append(errs, hostdb.LineError{Line: start, Msg: "unterminated string"})
				return toks, errs
			}
			toks = append(toks, token{text: s.String(), line: start, quoted: true})
		case c == '{' || c == '}' || c == ';' || c == ',':
			flush()
			toks = append(toks, token{text: string(c), line: line})
		case c == ' ' || c == '\t' || c == '\r':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return toks, errs
}

// params are the settings a host inherits from enclosing blocks.
type params struct {
	filename, nextServer, rootPath string
	options                        map[string]string
}

func (p params) clone() params {
	q := p
	q.options = map[string]string{}
	for k, v := range p.options {
		q.options[k] = v
	}
	return q
}

// option names dhcpd users put in host blocks, with their codes.
var optionCodes = map[string]string{
	"routers": "3", "domain-name-servers": "6", "host-name": "12", "domain-name": "15",
	"root-path": "17", "broadcast-address": "28", "ntp-servers": "42", "subnet-mask": "1",
	"tftp-server-name": "66", "bootfile-name": "67",
}

type parser struct {
	toks  []token
	i     int
	errs  []hostdb.LineError
	hosts []wire.NetbootHost
}

// Parse reads a dhcpd.conf.
func Parse(r io.Reader) ([]wire.NetbootHost, []hostdb.LineError) {
	toks, errs := lex(r)
	p := &parser{toks: toks, errs: errs}
	p.block(params{options: map[string]string{}}, 0, false)
	return p.hosts, p.errs
}

func (p *parser) peek() *token {
	if p.i < len(p.toks) {
		return &p.toks[p.i]
	}
	return nil
}

// statement returns the tokens up to ';' or '{' (consumed), and which.
func (p *parser) statement() ([]token, string) {
	var st []token
	for p.i < len(p.toks) {
		t := p.toks[p.i]
		p.i++
		if !t.quoted && (t.text == ";" || t.text == "{") {
			return st, t.text
		}
		if !t.quoted && t.text == "}" {
			p.i--
			return st, "}"
		}
		st = append(st, t)
	}
	return st, ""
}

// skipBlock skips to the '}' closing a block whose '{' was consumed.
func (p *parser) skipBlock() {
	depth := 1
	for p.i < len(p.toks) && depth > 0 {
		t := p.toks[p.i]
		p.i++
		if !t.quoted {
			switch t.text {
			case "{":
				depth++
			case "}":
				depth--
			}
		}
	}
}

// block reads statements until '}' (inner) or the end of input.
func (p *parser) block(inh params, depth int, inner bool) {
	cur := inh.clone()
	for {
		t := p.peek()
		if t == nil {
			if inner {
				p.errs = append(p.errs, hostdb.LineError{Line: p.lastLine(), Msg: "missing '}' at end of file"})
			}
			return
		}
		if !t.quoted && t.text == "}" {
			p.i++
			if !inner {
				p.errs = append(p.errs, hostdb.LineError{Line: t.line, Msg: "unexpected '}'"})
				continue
			}
			return
		}
		st, end := p.statement()
		if len(st) == 0 {
			if end == "{" {
				p.errs = append(p.errs, hostdb.LineError{Line: t.line, Msg: "block without a declaration"})
				p.skipBlock()
			}
			continue
		}
		kw := strings.ToLower(st[0].text)
		if end == "{" {
			switch {
			case kw == "host" && len(st) == 2:
				p.host(st[1], cur, depth)
			case kw == "host":
				p.errs = append(p.errs, hostdb.LineError{Line: st[0].line, Msg: "host declaration needs exactly one name: host NAME {"})
				p.skipBlock()
			case depth > 32:
				p.errs = append(p.errs, hostdb.LineError{Line: st[0].line, Msg: "blocks nest too deep"})
				p.skipBlock()
			case kw == "group" || kw == "subnet" || kw == "shared-network" || kw == "pool":
				p.block(cur, depth+1, true)
			default:
				p.skipBlock() // class, failover, key, zone, if …
			}
			continue
		}
		if end == "" && len(st) > 0 {
			p.errs = append(p.errs, hostdb.LineError{Line: st[0].line, Msg: fmt.Sprintf("statement %q does not end with ';'", st[0].text)})
			return
		}
		p.param(&cur, st)
	}
}

func (p *parser) lastLine() int {
	if len(p.toks) == 0 {
		return 1
	}
	return p.toks[len(p.toks)-1].line
}

// param applies an inheritable statement; others are ignored.
func (p *parser) param(cur *params, st []token) {
	kw := strings.ToLower(st[0].text)
	switch {
	case kw == "filename" && len(st) == 2:
		cur.filename = st[1].text
	case kw == "next-server" && len(st) == 2:
		cur.nextServer = st[1].text
	case kw == "option" && len(st) >= 3:
		if code, ok := optionCodes[strings.ToLower(st[1].text)]; ok {
			var vals []string
			for _, t := range st[2:] {
				if t.text != "," || t.quoted {
					vals = append(vals, t.text)
				}
			}
			if code == "17" {
				cur.rootPath = strings.Join(vals, " ")
			} else {
				cur.options[code] = strings.Join(vals, ",")
			}
		}
	}
}

func (p *parser) host(name token, inh params, depth int) {
	cur := inh.clone()
	h := wire.NetbootHost{Name: name.text, Comment: fmt.Sprintf("imported from dhcpd.conf host %s", name.text)}
	bad := ""
	badLine := name.line
	fail := func(line int, msg string) {
		if bad == "" {
			bad, badLine = msg, line
		}
	}
	for {
		t := p.peek()
		if t == nil {
			p.errs = append(p.errs, hostdb.LineError{Line: name.line, Msg: fmt.Sprintf("host %s: missing '}'", name.text)})
			return
		}
		if !t.quoted && t.text == "}" {
			p.i++
			break
		}
		st, end := p.statement()
		if end == "{" {
			fail(t.line, "unexpected block inside a host declaration")
			p.skipBlock()
			continue
		}
		if len(st) == 0 {
			continue
		}
		if end == "" {
			fail(st[0].line, fmt.Sprintf("statement %q does not end with ';'", st[0].text))
			continue
		}
		kw := strings.ToLower(st[0].text)
		switch kw {
		case "hardware":
			if len(st) != 3 {
				fail(st[0].line, "hardware needs a type and an address: hardware ethernet aa:bb:cc:dd:ee:ff;")
				continue
			}
			if strings.ToLower(st[1].text) != "ethernet" {
				fail(st[0].line, fmt.Sprintf("hardware %s: only ethernet is supported", st[1].text))
				continue
			}
			mac, err := net.ParseMAC(st[2].text)
			if err != nil || len(mac) != 6 {
				fail(st[2].line, fmt.Sprintf("%q is not an Ethernet MAC address", st[2].text))
				continue
			}
			h.MAC = mac.String()
		case "fixed-address":
			if len(st) != 2 {
				fail(st[0].line, "fixed-address with several addresses: berth gives one address per host")
				continue
			}
			a, err := netip.ParseAddr(st[1].text)
			if err != nil || !a.Is4() {
				fail(st[1].line, fmt.Sprintf("fixed-address %q is not an IPv4 address (host names are not resolved on import)", st[1].text))
				continue
			}
			h.IP = a.String()
		default:
			p.param(&cur, st)
		}
	}
	if bad != "" {
		p.errs = append(p.errs, hostdb.LineError{Line: badLine, Msg: fmt.Sprintf("host %s: %s", name.text, bad)})
		return
	}
	if h.MAC == "" {
		p.errs = append(p.errs, hostdb.LineError{Line: name.line, Msg: fmt.Sprintf("host %s has no 'hardware ethernet' address", name.text)})
		return
	}
	h.BootFile, h.NextServer, h.RootPath = cur.filename, cur.nextServer, cur.rootPath
	if n, ok := cur.options["12"]; ok {
		h.Name = n
		delete(cur.options, "12")
	}
	if len(cur.options) > 0 {
		h.Options = cur.options
	}
	nh, err := hostdb.Normalize(h)
	if err != nil {
		p.errs = append(p.errs, hostdb.LineError{Line: name.line, Msg: err.Error()})
		return
	}
	p.hosts = append(p.hosts, nh)
}
