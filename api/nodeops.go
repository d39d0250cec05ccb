package api

// WakeOnLANRequest is the body of POST /node/wakeonlan.
type WakeOnLANRequest struct {
	// Target is a node name whose configured wakeonlan MAC is used, or a
	// MAC address.
	Target string `json:"target"`
	// Interface to send from; empty uses the one holding the default route.
	Interface string `json:"interface,omitempty"`
}

// WakeOnLANResult says what was sent where.
type WakeOnLANResult struct {
	MAC         string `json:"mac"`
	Destination string `json:"destination"`
}

// BulkRequest is the body of POST /node/startall and /node/stopall.
type BulkRequest struct {
	// Force starts all guests, not only those marked onboot (startall).
	Force bool `json:"force,omitempty"`
	// Timeout is the default shutdown timeout in seconds (stopall).
	Timeout int `json:"timeout,omitempty"`
	// OnBootDelay applies startall-onboot-delay before starting (as at boot).
	OnBootDelay bool `json:"onboot-delay,omitempty"`
	// Guests limits the run to these guest IDs (pvenode --vms); empty
	// means all guests.
	Guests []int `json:"guests,omitempty"`
	// ForceStop false leaves guests that did not shut down within their
	// timeout running instead of stopping them hard (stopall; pvenode
	// --force-stop 0). Absent means true.
	ForceStop *bool `json:"force-stop,omitempty"`
}

// CertificateInfo describes a certificate the node serves or trusts.
type CertificateInfo struct {
	Filename    string   `json:"filename"`
	Subject     string   `json:"subject"`
	Issuer      string   `json:"issuer"`
	NotBefore   int64    `json:"notbefore"`
	NotAfter    int64    `json:"notafter"`
	Fingerprint string   `json:"fingerprint"`
	SANs        []string `json:"san,omitempty"`
	PEM         string   `json:"pem"`
}

// NodeConfigUpdate is the body of PUT /node/config; nil fields stay, names
// in Delete are reset.
type NodeConfigUpdate struct {
	Description         *string  `json:"description,omitempty"`
	WakeOnLAN           *string  `json:"wakeonlan,omitempty"`
	StartallOnbootDelay *int     `json:"startall-onboot-delay,omitempty"`
	Delete              []string `json:"delete,omitempty"`
	// Digest, when set, must be the digest of the configuration the
	// change was based on; a stale one gets 409.
	Digest string `json:"digest,omitempty"`
}
