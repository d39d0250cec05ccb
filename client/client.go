// Package client is the Go client of berth's REST API, used by the CLI and
// by tests. It talks to the daemon over its root-only unix socket or over
// HTTPS with a token or ticket; it never touches berth's state directly.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/berthhq/berth/api"
)

// Client calls one daemon.
type Client struct {
	base  string
	hc    *http.Client
	token string
	// ticket and csrf are set after Login.
	ticket, csrf string
}

// NewUnix returns a client for the daemon's unix socket.
func NewUnix(socket string) *Client {
	return &Client{base: "http://berth", hc: &http.Client{Transport: &unixTransport{socket: socket}}}
}

// TLSOptions says how to trust the daemon's certificate.
type TLSOptions struct {
	// CAPEM is a CA certificate to trust (the cluster CA).
	CAPEM []byte
	// Fingerprint pins the server certificate's SHA-256 fingerprint
	// (colon-separated hex, as `berth node cert list` shows).
	Fingerprint string
	// Insecure skips verification entirely; for tests and first contact only.
	Insecure bool
}

// NewHTTPS returns a client for base (https://host:8006) using token, which
// may be empty for Login.
func NewHTTPS(base, token string, o TLSOptions) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server %q is not an https://HOST:PORT URL", base)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case o.Insecure:
		cfg.InsecureSkipVerify = true
	case o.Fingerprint != "":
		want := strings.ToUpper(strings.ReplaceAll(o.Fingerprint, ":", ""))
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("server sent no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if got := fmt.Sprintf("%X", sum[:]); got != want {
				return fmt.Errorf("server certificate fingerprint %s does not match the pinned one", got)
			}
			return nil
		}
	case o.CAPEM != nil:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, errors.New("the CA file holds no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: true}
	return &Client{base: strings.TrimRight(base, "/"), hc: &http.Client{Transport: tr}, token: token}, nil
}

// Error is returned for every non-2xx answer.
type Error = api.Error

// Do sends a request and decodes the envelope's data into out (which may be
// nil). API failures come back as *api.Error.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return err
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	env := api.Envelope[json.RawMessage]{}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("%s %s: decode data: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.ticket != "":
		req.AddCookie(&http.Cookie{Name: "BerthAuthCookie", Value: c.ticket})
		req.Header.Set("CSRFPreventionToken", c.csrf)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the berth daemon: %w", err)
	}
	return resp, nil
}

func checkStatus(resp *http.Response) error {
	if resp.StatusCode < 300 {
		return nil
	}
	var eb api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &eb) != nil || eb.Error.Status == 0 {
		return &api.Error{Status: resp.StatusCode, Code: "http", Message: fmt.Sprintf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b)))}
	}
	return &eb.Error
}

// Login exchanges a user name and password for a ticket that the client
// then uses.
func (c *Client) Login(ctx context.Context, user, password string) (api.Ticket, error) {
	var t api.Ticket
	if err := c.Do(ctx, "POST", "/api/v1/access/ticket", api.LoginRequest{Username: user, Password: password}, &t); err != nil {
		return t, err
	}
	c.ticket, c.csrf, c.token = t.Ticket, t.CSRFPreventionToken, ""
	return t, nil
}

// Version returns the daemon's version and node name.
func (c *Client) Version(ctx context.Context) (api.Version, error) {
	var v api.Version
	return v, c.Do(ctx, "GET", "/api/v1/version", nil, &v)
}

// TaskFilter selects tasks in Tasks.
type TaskFilter struct {
	Errors, Running bool
	Guest, Type     string
	Since, Until    int64
	Limit           int
}

// Tasks lists the task index, newest first.
func (c *Client) Tasks(ctx context.Context, f TaskFilter) ([]api.Task, error) {
	q := url.Values{}
	if f.Errors {
		q.Set("errors", "1")
	}
	if f.Running {
		q.Set("running", "1")
	}
	if f.Guest != "" {
		q.Set("guest", f.Guest)
	}
	if f.Type != "" {
		q.Set("type", f.Type)
	}
	if f.Since != 0 {
		q.Set("since", strconv.FormatInt(f.Since, 10))
	}
	if f.Until != 0 {
		q.Set("until", strconv.FormatInt(f.Until, 10))
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out []api.Task
	return out, c.Do(ctx, "GET", "/api/v1/tasks?"+q.Encode(), nil, &out)
}

// Task returns one task's status.
func (c *Client) Task(ctx context.Context, upid string) (api.Task, error) {
	var t api.Task
	return t, c.Do(ctx, "GET", "/api/v1/tasks/"+url.PathEscape(upid), nil, &t)
}

// TaskLog returns a page of a task's log.
func (c *Client) TaskLog(ctx context.Context, upid string, start, limit int) (api.TaskLog, error) {
	var l api.TaskLog
	return l, c.Do(ctx, "GET", fmt.Sprintf("/api/v1/tasks/%s/log?start=%d&limit=%d", url.PathEscape(upid), start, limit), nil, &l)
}

// FollowTaskLog streams a task's log from line start, calling emit for each
// line, until the task ends or ctx is cancelled.
func (c *Client) FollowTaskLog(ctx context.Context, upid string, start int, emit func(string)) error {
	_, err := c.followTaskLog(ctx, upid, start, emit)
	return err
}

// followTaskLog is FollowTaskLog that also returns the task's final entry
// from the stream's trailer, or nil if the daemon sent none.
func (c *Client) followTaskLog(ctx context.Context, upid string, start int, emit func(string)) (*api.Task, error) {
	resp, err := c.send(ctx, "GET", fmt.Sprintf("/api/v1/tasks/%s/log?follow=1&start=%d", url.PathEscape(upid), start), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return nil, err
	}
	return readTaskStream(ctx, resp, upid, emit)
}

// readTaskStream passes the lines of a task log stream to emit and
// returns the task's final entry from the trailer (nil if the stream
// ended without one).
func readTaskStream(ctx context.Context, resp *http.Response, upid string, emit func(string)) (*api.Task, error) {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		emit(sc.Text())
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("follow task log: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The trailer is set once the body was read to its end.
	if v := resp.Trailer.Get(api.TaskTrailer); v != "" {
		var t api.Task
		if json.Unmarshal([]byte(v), &t) == nil && t.UPID == upid && t.Status != api.TaskRunning {
			return &t, nil
		}
	}
	return nil, nil
}

// RunTask starts a task with method and path (a POST or DELETE of an
// async route) and waits for it in the same request (follow=1): emit
// (when not nil) gets each log line, and the task's final entry is
// returned. A failed task is not an error here: check ExitStatus. A
// daemon that answers with the UPID instead (one without follow) is
// followed with WaitTask.
func (c *Client) RunTask(ctx context.Context, method, path string, body any, emit func(string)) (api.Task, error) {
	if emit == nil {
		emit = func(string) {}
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	resp, err := c.send(ctx, method, path+sep+"follow=1", body)
	if err != nil {
		return api.Task{}, err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return api.Task{}, err
	}
	upid := resp.Header.Get(api.TaskHeader)
	if upid == "" {
		var acc api.Accepted
		env := api.Envelope[*api.Accepted]{Data: &acc}
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || acc.UPID == "" {
			return api.Task{}, fmt.Errorf("%s %s: the answer names no task (%v)", method, path, err)
		}
		return c.WaitTask(ctx, acc.UPID, emit)
	}
	seen := 0
	final, err := readTaskStream(ctx, resp, upid, func(l string) { seen++; emit(l) })
	if err != nil {
		return api.Task{}, err
	}
	if final != nil {
		return *final, nil
	}
	// The stream ended without the final entry: follow on from the
	// first line not seen.
	return c.waitTaskFrom(ctx, upid, seen, emit)
}

// WaitTask follows the log (when emit is not nil) and returns the final
// status: from the log stream's trailer, or, from a daemon that sends
// none, by polling the task.
func (c *Client) WaitTask(ctx context.Context, upid string, emit func(string)) (api.Task, error) {
	if emit == nil {
		emit = func(string) {}
	}
	return c.waitTaskFrom(ctx, upid, 0, emit)
}

// waitTaskFrom is WaitTask from line start of the log.
func (c *Client) waitTaskFrom(ctx context.Context, upid string, start int, emit func(string)) (api.Task, error) {
	final, err := c.followTaskLog(ctx, upid, start, emit)
	if err != nil {
		return api.Task{}, err
	}
	if final != nil {
		return *final, nil
	}
	for {
		t, err := c.Task(ctx, upid)
		if err != nil || t.Status != api.TaskRunning {
			return t, err
		}
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// StopTask asks the daemon to stop a running task.
func (c *Client) StopTask(ctx context.Context, upid string) error {
	return c.Do(ctx, "DELETE", "/api/v1/tasks/"+url.PathEscape(upid), nil, nil)
}
