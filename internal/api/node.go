package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/certs"
	"github.com/berthhq/berth/internal/node"
	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/task"
)

// NodeConfigKey is where the node configuration lives in the store.
const NodeConfigKey = "node/config"

func (sv *Services) nodeRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/v1/node/status", Summary: "Node status: kernel, uptime, load, CPU, memory, swap, root fs, boot mode, KSM.", Role: wire.RoleAuditor, Resp: wire.NodeStatus{},
			Handle: func(r *Request) (any, error) {
				st, err := sv.Host.Status()
				st.BerthVersion = sv.Version
				st.ESP = sv.BootSummary()
				if sv.KSM != nil {
					if c, cerr := sv.KSM.Config(r.Context()); cerr == nil {
						st.KSM.Mode = c.Mode
					}
				}
				return st, err
			}},
		{Method: "GET", Path: "/api/v1/node/config", Summary: "Node configuration with its digest.", Role: wire.RoleAuditor, Resp: wire.NodeConfig{},
			Handle: func(r *Request) (any, error) { return sv.NodeConfig(r.Context()) }},
		{Method: "PUT", Path: "/api/v1/node/config", Summary: "Change the node configuration; a stale digest gets 409.", Role: wire.RoleAdmin, Body: wire.NodeConfigUpdate{}, Resp: wire.NodeConfig{},
			Handle: sv.setNodeConfig},
		{Method: "POST", Path: "/api/v1/node/wakeonlan", Summary: "Send a Wake-on-LAN magic packet to a node (by its configured MAC) or a MAC.", Role: wire.RoleAdmin, Body: wire.WakeOnLANRequest{}, Resp: wire.WakeOnLANResult{},
			Handle: sv.wakeOnLAN},
		{Method: "POST", Path: "/api/v1/node/startall", Summary: "Start guests marked onboot (all with force) in startup order, as a task.", Role: wire.RoleOperator, Body: wire.BulkRequest{}, Async: true,
			Handle: sv.startAll},
		{Method: "POST", Path: "/api/v1/node/stopall", Summary: "Shut down all guests in reverse startup order, as a task.", Role: wire.RoleOperator, Body: wire.BulkRequest{}, Async: true,
			Handle: sv.stopAll},
		{Method: "GET", Path: "/api/v1/node/certificates", Summary: "The cluster CA and this node's certificate.", Role: wire.RoleAuditor, Resp: []wire.CertificateInfo{},
			Handle: func(r *Request) (any, error) {
				var out []wire.CertificateInfo
				for _, c := range []struct {
					name string
					pem  []byte
				}{{"berth-root-ca.pem", sv.CAPEM}, {"berth-ssl.pem", sv.CertPEM}} {
					info, err := certInfo(c.name, c.pem)
					if err != nil {
						return nil, err
					}
					out = append(out, info)
				}
				return out, nil
			}},
	}
}

func certInfo(name string, p []byte) (wire.CertificateInfo, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return wire.CertificateInfo{}, fmt.Errorf("%s: no PEM certificate", name)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return wire.CertificateInfo{}, fmt.Errorf("%s: %w", name, err)
	}
	fp, _ := certs.Fingerprint(p)
	info := wire.CertificateInfo{Filename: name, Subject: c.Subject.String(), Issuer: c.Issuer.String(),
		NotBefore: c.NotBefore.Unix(), NotAfter: c.NotAfter.Unix(), Fingerprint: fp, PEM: string(p)}
	info.SANs = append(info.SANs, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		info.SANs = append(info.SANs, ip.String())
	}
	return info, nil
}

// NodeConfig reads the node configuration (empty when never set).
func (sv *Services) NodeConfig(ctx context.Context) (wire.NodeConfig, error) {
	c, digest, err := store.GetJSON[wire.NodeConfig](ctx, sv.Store, NodeConfigKey)
	if errors.Is(err, store.ErrNotFound) {
		return wire.NodeConfig{}, nil
	}
	c.Digest = digest
	return c, err
}

func (sv *Services) setNodeConfig(r *Request) (any, error) {
	var u wire.NodeConfigUpdate
	if err := r.Decode(&u); err != nil {
		return nil, err
	}
	cur, err := sv.NodeConfig(r.Context())
	if err != nil {
		return nil, err
	}
	if u.Digest != "" && u.Digest != cur.Digest {
		return nil, fmt.Errorf("node configuration: %w", store.ErrConflict)
	}
	next := cur
	next.Digest = ""
	bad := map[string]string{}
	for _, d := range u.Delete {
		switch d {
		case "description":
			next.Description = ""
		case "wakeonlan":
			next.WakeOnLAN = ""
		case "startall-onboot-delay":
			next.StartallOnbootDelay = 0
		default:
			bad["delete"] = fmt.Sprintf("%q is not a node option: use description, wakeonlan or startall-onboot-delay", d)
		}
	}
	if u.Description != nil {
		next.Description = *u.Description
	}
	if u.WakeOnLAN != nil {
		next.WakeOnLAN = *u.WakeOnLAN
	}
	if u.StartallOnbootDelay != nil {
		next.StartallOnbootDelay = *u.StartallOnbootDelay
	}
	for k, v := range node.ValidateConfig(next) {
		bad[k] = v
	}
	if len(bad) > 0 {
		return nil, Invalid("invalid node configuration", bad)
	}
	if mac, err := node.ParseMAC(next.WakeOnLAN); err == nil {
		next.WakeOnLAN = mac.String()
	}
	cond := store.Cond{Digest: cur.Digest}
	if cur.Digest == "" {
		cond = store.Cond{Create: true}
	}
	digest, err := store.PutJSON(r.Context(), sv.Store, NodeConfigKey, next, cond)
	if errors.Is(err, store.ErrExists) {
		err = fmt.Errorf("node configuration: %w", store.ErrConflict)
	}
	if err != nil {
		return nil, err
	}
	next.Digest = digest
	return next, nil
}

func (sv *Services) wakeOnLAN(r *Request) (any, error) {
	var in wire.WakeOnLANRequest
	if err := r.Decode(&in); err != nil {
		return nil, err
	}
	var mac net.HardwareAddr
	if m, err := node.ParseMAC(in.Target); err == nil {
		mac = m
	} else if in.Target == sv.Node {
		cfg, err := sv.NodeConfig(r.Context())
		if err != nil {
			return nil, err
		}
		if cfg.WakeOnLAN == "" {
			return nil, Invalid("node has no Wake-on-LAN MAC", map[string]string{"target": fmt.Sprintf("node %s has no wakeonlan MAC: set one with 'berth node config set --wakeonlan MAC'", in.Target)})
		}
		if mac, err = node.ParseMAC(cfg.WakeOnLAN); err != nil {
			return nil, err
		}
	} else {
		return nil, Invalid("unknown target", map[string]string{"target": fmt.Sprintf("%q is neither a MAC address nor a known node: give the MAC (aa:bb:cc:dd:ee:ff)", in.Target)})
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	dest, err := node.WakeOnLAN(ctx, mac, in.Interface)
	if err != nil {
		return nil, Invalid(err.Error(), nil)
	}
	sv.Log.Info("wake-on-lan packet sent", "mac", mac.String(), "dest", dest.String(), "user", r.Identity.User)
	return wire.WakeOnLANResult{MAC: mac.String(), Destination: dest.String()}, nil
}

func (sv *Services) decodeBulk(r *Request) (wire.BulkRequest, error) {
	var in wire.BulkRequest
	if r.ContentLength == 0 {
		return in, nil
	}
	err := r.Decode(&in)
	if err == nil && in.Timeout < 0 {
		err = Invalid("invalid timeout", map[string]string{"timeout": "must be 0 (default) or more seconds"})
	}
	if err == nil && in.Guests != nil {
		// Unknown IDs are refused before the task starts.
		for _, id := range in.Guests {
			if _, gerr := sv.Guests.Get(r.Context(), id); gerr != nil {
				return in, Invalid("unknown guest in --guests", map[string]string{"guests": gerr.Error()})
			}
		}
	}
	return in, err
}

func (sv *Services) startAll(r *Request) (any, error) {
	in, err := sv.decodeBulk(r)
	if err != nil {
		return nil, err
	}
	u, err := sv.runStartAll(taskUser(r.Identity.User), in)
	if err != nil {
		return nil, err
	}
	return wire.Accepted{UPID: u.String()}, nil
}

// StartOnBoot starts the onboot guests after the startall-onboot-delay, as
// the daemon does once after each host boot.
func (sv *Services) StartOnBoot() (task.UPID, error) {
	return sv.runStartAll("root@pam", wire.BulkRequest{OnBootDelay: true})
}

func (sv *Services) runStartAll(user string, in wire.BulkRequest) (task.UPID, error) {
	return sv.Tasks.Start(task.Spec{Type: "startall", User: user}, func(ctx context.Context, l *task.Log) error {
		if in.OnBootDelay {
			cfg, err := sv.NodeConfig(ctx)
			if err != nil {
				return err
			}
			gs, err := sv.Guests.List(ctx)
			if err != nil {
				return err
			}
			if d := cfg.StartallOnbootDelay; d > 0 && len(startable(gs, in.Force)) > 0 {
				l.Printf("Delaying on-boot startup for %d seconds", d)
				if err := sleepCtx(ctx, time.Duration(d)*time.Second); err != nil {
					return err
				}
			}
		}
		return sv.Guests.StartGuests(ctx, l, !in.Force, in.Guests, sleepCtx)
	})
}

func startable(gs []wire.Guest, force bool) []wire.Guest {
	var out []wire.Guest
	for _, g := range gs {
		if force || g.OnBoot {
			out = append(out, g)
		}
	}
	return out
}

func (sv *Services) stopAll(r *Request) (any, error) {
	in, err := sv.decodeBulk(r)
	if err != nil {
		return nil, err
	}
	timeout := 180 * time.Second
	if in.Timeout > 0 {
		timeout = time.Duration(in.Timeout) * time.Second
	}
	force := in.ForceStop == nil || *in.ForceStop
	return sv.start(r, "stopall", "", func(ctx context.Context, l *task.Log) error {
		return sv.Guests.StopGuests(ctx, l, timeout, in.Guests, force)
	})
}

// start runs fn as a task of the caller and returns the 202 data.
func (sv *Services) start(r *Request, typ, id string, fn task.Func) (any, error) {
	u, err := sv.Tasks.Start(task.Spec{Type: typ, ID: id, User: taskUser(r.Identity.User)}, fn)
	if err != nil {
		return nil, err
	}
	return wire.Accepted{UPID: u.String()}, nil
}

// taskUser makes a user name safe for a UPID field.
func taskUser(u string) string {
	if u == "" {
		return "root@pam"
	}
	return strings.NewReplacer(":", "_", "/", "_").Replace(u)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
