package netboot

import (
	"bytes"
	"context"
	"fmt"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/netboot/hostdb"
	"github.com/berthhq/berth/internal/netboot/hostdb/bootptab"
	"github.com/berthhq/berth/internal/netboot/hostdb/dhcpd"
	"github.com/berthhq/berth/internal/netboot/hostdb/dnsmasq"
)

// Formats are the host file formats Import reads.
var Formats = []string{"bootptab", "dnsmasq", "dhcpd"}

// ParseHosts reads a host file in one of Formats.
func ParseHosts(format string, data []byte) ([]wire.NetbootHost, []hostdb.LineError, error) {
	r := bytes.NewReader(data)
	switch format {
	case "bootptab":
		h, e := bootptab.Parse(r)
		return h, e, nil
	case "dnsmasq":
		h, e := dnsmasq.Parse(r)
		return h, e, nil
	case "dhcpd":
		h, e := dhcpd.Parse(r)
		return h, e, nil
	}
	return nil, nil, &ValidationError{map[string]string{"format": fmt.Sprintf("%q is not a host file format: use bootptab, dnsmasq or dhcpd", format)}}
}

// ImportError is a file with unreadable lines and no --skip-bad.
type ImportError struct{ Lines []hostdb.LineError }

func (e *ImportError) Error() string {
	s := fmt.Sprintf("nothing imported: %d line(s) could not be read (fix them, or pass --skip-bad to import the rest)", len(e.Lines))
	return s
}

// FieldErrors lists the lines, so the API answers 400 with them.
func (e *ImportError) FieldErrors() map[string]string {
	m := map[string]string{}
	for _, l := range e.Lines {
		k := fmt.Sprintf("line %d", l.Line)
		if m[k] != "" {
			m[k] += "; " + l.Msg
		} else {
			m[k] = l.Msg
		}
	}
	return m
}

// Import reads a host file and writes its hosts: all of them or, when
// the file has unreadable lines, none unless skipBad.
func (s *Service) Import(ctx context.Context, in wire.NetbootHostImport) (wire.NetbootImportResult, error) {
	hosts, lerrs, err := ParseHosts(in.Format, []byte(in.Data))
	if err != nil {
		return wire.NetbootImportResult{}, err
	}
	res := wire.NetbootImportResult{Hosts: hosts}
	for _, e := range lerrs {
		res.Skipped = append(res.Skipped, e.Error())
	}
	if res.Hosts == nil {
		res.Hosts = []wire.NetbootHost{}
	}
	if len(lerrs) > 0 && !in.SkipBad {
		return res, &ImportError{Lines: lerrs}
	}
	if in.DryRun {
		return res, nil
	}
	res.Created, res.Updated, err = s.Hosts.Import(ctx, hosts)
	if err == nil {
		s.log.Info("netboot hosts imported", "format", in.Format, "created", res.Created, "updated", res.Updated, "skipped", len(lerrs))
	}
	return res, err
}
