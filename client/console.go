package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/berthhq/berth/api"
)

// GuestConsole attaches to the serial console of VM id (kind api.GuestVM)
// or the main console of UML guest id (api.GuestUML) and returns the raw
// byte stream; closing it detaches.
func (c *Client) GuestConsole(ctx context.Context, kind api.GuestKind, id int) (io.ReadWriteCloser, error) {
	seg := map[api.GuestKind]string{api.GuestVM: "vms", api.GuestUML: "umls"}[kind]
	if seg == "" {
		return nil, fmt.Errorf("no raw console for %s guests", kind)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/api/v1/"+seg+"/"+strconv.Itoa(id)+"/console", nil)
	if err != nil {
		return nil, err
	}
	return c.upgradeConn(req, api.ConsoleUpgrade, "console")
}

// upgradeConn sends req as an HTTP/1.1 connection upgrade to protocol proto,
// authenticated like every other request, and returns the raw connection.
// what names the stream in errors.
func (c *Client) upgradeConn(req *http.Request, proto, what string) (io.ReadWriteCloser, error) {
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", proto)
	switch {
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.ticket != "":
		req.AddCookie(&http.Cookie{Name: "BerthAuthCookie", Value: c.ticket})
		req.Header.Set("CSRFPreventionToken", c.csrf)
	}
	hc := c.hc
	if tr, ok := c.hc.Transport.(*http.Transport); ok && tr.TLSClientConfig != nil {
		// HTTP/2 has no connection upgrade: use HTTP/1.1 for streams.
		t := tr.Clone()
		t.ForceAttemptHTTP2 = false
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		t.TLSClientConfig.NextProtos = []string{"http/1.1"}
		hc = &http.Client{Transport: t}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the berth daemon: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		if err := checkStatus(resp); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: the daemon answered %s instead of switching protocols", what, resp.Status)
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: upgraded connection is not writable", what)
	}
	return conn, nil
}
