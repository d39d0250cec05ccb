package api

import (
	"log/slog"

	"github.com/berthhq/berth/internal/auth"
	"github.com/berthhq/berth/internal/guest"
	"github.com/berthhq/berth/internal/hostnet"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/ksm"
	"github.com/berthhq/berth/internal/netboot"
	"github.com/berthhq/berth/internal/node"
	"github.com/berthhq/berth/internal/store"
	"github.com/berthhq/berth/internal/task"
)

// Services are what the handlers call. The daemon fills it in.
type Services struct {
	Node    string
	Version string
	Log     *slog.Logger
	Store   store.Store
	Auth    *auth.Service
	Tasks   *task.Manager
	Guests  *guest.Registry
	Host    node.Host
	// KSM controls Kernel Samepage Merging; nil makes its routes answer 503.
	KSM *ksm.Service
	// Images is the image store (nil: the image routes answer 503).
	Images *image.Store
	// HostNet manages /etc/network/interfaces (nil: its routes answer 503).
	HostNet *hostnet.Manager
	// Netboot is the network boot service (nil: its routes answer 503).
	Netboot *netboot.Service
	// BootRoot is the root whose /etc/kernel and /boot the boot routes
	// manage ("" is "/").
	BootRoot string
	// CAPEM and CertPEM are the cluster CA and this node's certificate.
	CAPEM, CertPEM []byte
}

// Routes returns the whole route table.
func (sv *Services) Routes() []Route {
	var rs []Route
	rs = append(rs, sv.accessRoutes()...)
	rs = append(rs, sv.taskRoutes()...)
	rs = append(rs, sv.nodeRoutes()...)
	rs = append(rs, sv.bootRoutes()...)
	rs = append(rs, sv.guestRoutes()...)
	rs = append(rs, sv.vmRoutes()...)
	rs = append(rs, sv.umlRoutes()...)
	rs = append(rs, sv.containerRoutes()...)
	rs = append(rs, sv.ksmRoutes()...)
	rs = append(rs, sv.imageRoutes()...)
	rs = append(rs, sv.hostnetRoutes()...)
	rs = append(rs, sv.netbootRoutes()...)
	return rs
}
