// Package dnsmasq reads the dhcp-host= lines of a dnsmasq configuration
// file (or a dhcp-hostsfile, whose lines omit "dhcp-host=") into netboot
// host entries: MAC, IPv4 address, host name. Other directives are not
// host entries and are passed over; lines it cannot read (wildcard MACs,
// several MACs for one address, bad addresses) are reported with their
// numbers.
package dnsmasq

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

// Parse reads a dnsmasq configuration or hosts file.
func Parse(r io.Reader) ([]wire.NetbootHost, []hostdb.LineError) {
	var hosts []wire.NetbootHost
	var errs []hostdb.LineError
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		t := strings.TrimSpace(sc.Text())
		if t == "" || t[0] == '#' {
			continue
		}
		val, ok := strings.CutPrefix(t, "dhcp-host=")
		if !ok {
			val, ok = strings.CutPrefix(t, "--dhcp-host=")
		}
		if !ok {
			if strings.Contains(t, "=") || !looksLikeHost(t) {
				continue // another directive
			}
			val = t // a dhcp-hostsfile line
		}
		h, skip, err := parseHost(val)
		if err != nil {
			errs = append(errs, hostdb.LineError{Line: n, Msg: err.Error()})
			continue
		}
		if skip {
			continue
		}
		h.Comment = fmt.Sprintf("imported from dnsmasq line %d", n)
		nh, err := hostdb.Normalize(h)
		if err != nil {
			errs = append(errs, hostdb.LineError{Line: n, Msg: err.Error()})
			continue
		}
		hosts = append(hosts, nh)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, hostdb.LineError{Line: n + 1, Msg: "cannot read: " + err.Error()})
	}
	return hosts, errs
}

func looksLikeHost(t string) bool {
	first, _, _ := strings.Cut(t, ",")
	_, err := net.ParseMAC(first)
	return err == nil || strings.Count(first, ":") == 5
}

// parseHost reads the value of one dhcp-host option. skip reports a valid
// entry that is not a host to import (an "ignore" entry or one without a
// MAC).
func parseHost(v string) (h wire.NetbootHost, skip bool, err error) {
	var macs []string
	for _, part := range strings.Split(v, ",") {
		p := strings.TrimSpace(part)
		switch {
		case p == "":
			return h, false, fmt.Errorf("empty field in dhcp-host=%s", v)
		case p == "ignore":
			skip = true
		case p == "infinite" || isLeaseTime(p):
		case strings.HasPrefix(p, "id:"), strings.HasPrefix(p, "set:"), strings.HasPrefix(p, "tag:"), strings.HasPrefix(p, "net:"), p == "*":
		case strings.HasPrefix(p, "["):
			// an IPv6 address: not served by berth's DHCPv4
		case isMAC(p):
			if strings.Contains(p, "*") {
				return h, false, fmt.Errorf("wildcard MAC %s: berth's host entries name one MAC each", p)
			}
			mac, err := net.ParseMAC(strings.TrimPrefix(p, "1-"))
			if err != nil {
				return h, false, fmt.Errorf("%q is not a MAC address", p)
			}
			macs = append(macs, mac.String())
		default:
			if a, err := netip.ParseAddr(p); err == nil {
				if !a.Is4() {
					return h, false, fmt.Errorf("%s is not an IPv4 address", p)
				}
				if h.IP != "" {
					return h, false, fmt.Errorf("two addresses (%s and %s) for one host", h.IP, p)
				}
				h.IP = a.String()
				continue
			}
			if looksNumericIP(p) {
				return h, false, fmt.Errorf("%q is not a valid IPv4 address", p)
			}
			if h.Name != "" {
				return h, false, fmt.Errorf("unexpected field %q (the host name is already %q)", p, h.Name)
			}
			h.Name = p
		}
	}
	if len(macs) == 0 {
		return h, true, nil // by client id or name only: nothing keyed by MAC
	}
	if len(macs) > 1 {
		return h, false, fmt.Errorf("%d MACs share one entry: give each MAC its own dhcp-host line", len(macs))
	}
	h.MAC = macs[0]
	return h, skip, nil
}

func isMAC(p string) bool {
	p = strings.TrimPrefix(p, "1-")
	return strings.Count(p, ":") == 5 || strings.Count(p, "-") == 5
}

func looksNumericIP(p string) bool {
	return strings.Count(p, ".") == 3 && strings.Trim(p, "0123456789.") == ""
}

func isLeaseTime(p string) bool {
	if p == "" {
		return false
	}
	s := strings.TrimRight(p, "smhdw")
	if len(s) == len(p)-1 || len(s) == len(p) {
		return s != "" && strings.Trim(s, "0123456789") == "" && !strings.Contains(p, ".")
	}
	return false
}
