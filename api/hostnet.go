package api

// NetworkConfig is the host's network configuration as GET
// /node/network shows it: the interfaces of the staged file
// (/etc/network/interfaces.new) when changes are staged, else of the
// active file.
type NetworkConfig struct {
	// Path of the active interfaces file.
	Path string `json:"path"`
	// Digest is the SHA-256 of the active file; it changes with every
	// edit, by berth or by hand.
	Digest string `json:"digest"`
	// StagedDigest is the SHA-256 of interfaces.new, empty when nothing
	// is staged. Edits name it (or Digest when nothing is staged) to be
	// refused with 409 when someone else changed the file first.
	StagedDigest string `json:"staged_digest,omitempty"`
	// Changes reports whether staged changes wait for apply.
	Changes bool `json:"changes"`
	// Stale reports that the active file was edited by hand after the
	// changes were staged; apply then needs the active file's digest.
	Stale bool `json:"stale,omitempty"`
	// Interfaces in file order.
	Interfaces []NetworkInterface `json:"interfaces"`
	// Rollback, when set, is an applied change that is rolled back
	// unless confirmed before its deadline.
	Rollback *NetworkRollback `json:"rollback,omitempty"`
}

// NetworkInterface is one interface of the file with what berth derives
// from it.
type NetworkInterface struct {
	Name string `json:"name"`
	// Type is loopback, eth (a physical NIC), bridge, bond, vlan, dummy
	// or alias.
	Type    string `json:"type"`
	Auto    bool   `json:"autostart"`
	Hotplug bool   `json:"hotplug,omitempty"`
	// Method and Method6 are the inet and inet6 methods (static, manual,
	// dhcp, loopback, auto), empty when the family has no stanza.
	Method  string `json:"method,omitempty"`
	Method6 string `json:"method6,omitempty"`
	// Addresses are CIDRs of both families.
	Addresses []string `json:"addresses,omitempty"`
	Gateway   string   `json:"gateway,omitempty"`
	Gateway6  string   `json:"gateway6,omitempty"`
	MTU       int      `json:"mtu,omitempty"`
	// Ports of a bridge, Slaves of a bond.
	Ports  []string `json:"bridge_ports,omitempty"`
	Slaves []string `json:"bond_slaves,omitempty"`
	// BondMode is one of the seven bonding modes.
	BondMode  string `json:"bond_mode,omitempty"`
	VLANAware bool   `json:"bridge_vlan_aware,omitempty"`
	// VLANRawDevice and VLANID of a VLAN.
	VLANRawDevice string `json:"vlan_raw_device,omitempty"`
	VLANID        int    `json:"vlan_id,omitempty"`
	// Active reports whether the interface exists and is up now.
	Active bool `json:"active"`
	// Options are every option line of the interface in order.
	Options []NetworkOption `json:"options,omitempty"`
	// File and Line say where the interface is defined.
	File string `json:"file"`
	Line int    `json:"line"`
}

// NetworkOption is one "key value" line of an iface stanza.
type NetworkOption struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// NetworkInterfaceSpec is the body of POST /node/network/interfaces (a new
// interface) and PUT /node/network/interfaces/{name} (a change: fields
// left out stay as they are). Changes are staged in interfaces.new.
type NetworkInterfaceSpec struct {
	// Name is required for POST and ignored by PUT.
	Name string `json:"name,omitempty"`
	// Autostart adds the interface to an auto line (default true for
	// new interfaces).
	Autostart *bool `json:"autostart,omitempty"`
	// Method of the inet stanza: static, manual, dhcp (default static
	// with an address, manual without).
	Method string `json:"method,omitempty"`
	// Address is IPv4 CIDRs, Address6 IPv6 CIDRs.
	Address  []string `json:"address,omitempty"`
	Gateway  string   `json:"gateway,omitempty"`
	Address6 []string `json:"address6,omitempty"`
	Gateway6 string   `json:"gateway6,omitempty"`
	MTU      int      `json:"mtu,omitempty"`
	// BridgePorts makes a bridge; an empty list writes "bridge-ports none".
	BridgePorts     *[]string `json:"bridge_ports,omitempty"`
	BridgeSTP       *bool     `json:"bridge_stp,omitempty"`
	BridgeFD        *int      `json:"bridge_fd,omitempty"`
	BridgeVLANAware *bool     `json:"bridge_vlan_aware,omitempty"`
	BridgeVIDs      string    `json:"bridge_vids,omitempty"`
	// BondSlaves makes a bond.
	BondSlaves         []string `json:"bond_slaves,omitempty"`
	BondMode           string   `json:"bond_mode,omitempty"`
	BondMiimon         *int     `json:"bond_miimon,omitempty"`
	BondXmitHashPolicy string   `json:"bond_xmit_hash_policy,omitempty"`
	// VLANRawDevice and VLANID make a VLAN with a free name (NAME.VID
	// needs neither).
	VLANRawDevice string `json:"vlan_raw_device,omitempty"`
	VLANID        int    `json:"vlan_id,omitempty"`
	// Options are set as they are (any ifupdown2 option, hooks too);
	// an option given here replaces all lines of its key.
	Options []NetworkOption `json:"options,omitempty"`
	// Delete names option keys to remove (PUT only).
	Delete []string `json:"delete,omitempty"`
	// Digest, when set, must be the staged digest (or the active one
	// when nothing is staged); a stale one gets 409.
	Digest string `json:"digest,omitempty"`
}

// NetworkApplyRequest is the body of POST /node/network/apply.
type NetworkApplyRequest struct {
	// RollbackAfter, in seconds, rolls the change back unless POST
	// /node/network/confirm arrives in time. Omitted: 60 over HTTPS, none
	// on the local socket; 0 turns it off.
	RollbackAfter *int `json:"rollback_after,omitempty"`
	// Digest, when set, must be the digest of what is applied (staged or
	// active). Needed when the active file was edited by hand after
	// staging (Stale).
	Digest string `json:"digest,omitempty"`
	// DryRun only lists the live changes the apply would make.
	DryRun bool `json:"dry_run,omitempty"`
}

// NetworkRollback is an applied change that waits for confirmation.
type NetworkRollback struct {
	// State is "applying" or "pending".
	State string `json:"state"`
	// Deadline is when it is rolled back (Unix seconds; 0 for none).
	Deadline int64 `json:"deadline"`
	// UPID of the apply task.
	UPID string `json:"upid,omitempty"`
}

// NetworkDiff is the unified diff of staged changes.
type NetworkDiff struct {
	Diff string `json:"diff"`
}
