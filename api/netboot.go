package api

// NetbootHost is one machine of the network boot host database, keyed by
// its MAC address (like a line of /etc/bootptab or a dnsmasq dhcp-host).
type NetbootHost struct {
	// MAC is the client's Ethernet address, aa:bb:cc:dd:ee:ff.
	MAC string `json:"mac"`
	// Name is the host name sent in option 12.
	Name string `json:"name,omitempty"`
	// IP is the fixed IPv4 address; empty means an address from the pool.
	IP string `json:"ip,omitempty"`
	// BootFile is the file non-iPXE clients load over TFTP (bootptab bf=).
	BootFile string `json:"bootfile,omitempty"`
	// NextServer is the TFTP server when it is not berth (bootptab sa=).
	NextServer string `json:"next-server,omitempty"`
	// RootPath is DHCP option 17 (bootptab rp=).
	RootPath string `json:"root-path,omitempty"`
	// Kernel, Initrd and Cmdline make berth generate an iPXE script for
	// the host, served over HTTP; iPXE clients get its URL.
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	// Root names the shared image the host uses as its diskless root.
	Root string `json:"root,omitempty"`
	// Options are extra DHCP options: code (decimal) → value, where the
	// value is a comma-separated list of IPv4 addresses, 0x-prefixed hex
	// bytes, or text.
	Options map[string]string `json:"options,omitempty"`
	Comment string            `json:"comment,omitempty"`
	// Digest of the stored entry; on update, a stale one gets 409.
	Digest string `json:"digest,omitempty"`
}

// NetbootHostImport is the body of POST /netboot/hosts/import.
type NetbootHostImport struct {
	// Format is bootptab, dnsmasq or dhcpd.
	Format string `json:"format"`
	// Data is the file's text.
	Data string `json:"data"`
	// SkipBad imports the readable entries of a file with errors
	// instead of importing nothing.
	SkipBad bool `json:"skip-bad,omitempty"`
	// DryRun parses and validates only.
	DryRun bool `json:"dry-run,omitempty"`
}

// NetbootImportResult says what an import did.
type NetbootImportResult struct {
	Created int `json:"created"`
	Updated int `json:"updated"`
	// Skipped lists the lines that could not be read, as "line N: why".
	Skipped []string `json:"skipped,omitempty"`
	// Hosts are the entries read from the file.
	Hosts []NetbootHost `json:"hosts"`
}

// NetbootInterface is one interface network boot serves.
type NetbootInterface struct {
	// Name of the interface or bridge.
	Name string `json:"name"`
	// Proxy answers as ProxyDHCP (boot options only) beside another
	// DHCP server.
	Proxy bool `json:"proxy,omitempty"`
	// Range is the dynamic pool "first-last"; empty means static hosts
	// only.
	Range string `json:"range,omitempty"`
	// Router and DNS are handed out with leases; Router defaults to none.
	Router string   `json:"router,omitempty"`
	DNS    []string `json:"dns,omitempty"`
	Domain string   `json:"domain,omitempty"`
	// LeaseTime in seconds (default 3600).
	LeaseTime int `json:"lease-time,omitempty"`
}

// NetbootConfig is network boot's configuration: off unless enabled, and
// only on the interfaces listed.
type NetbootConfig struct {
	Enabled    bool               `json:"enabled"`
	Interfaces []NetbootInterface `json:"interfaces,omitempty"`
	// Root is the directory served over TFTP and HTTP (default
	// DATA/netboot/root).
	Root string `json:"root,omitempty"`
	// HTTPPort of the HTTP boot service on the served interfaces
	// (default 8067).
	HTTPPort int `json:"http-port,omitempty"`
	// BIOS, EFI64, ARM64 and HTTPBoot are the default loaders by client
	// architecture (relative to Root).
	BIOS     string `json:"bios,omitempty"`
	EFI64    string `json:"efi64,omitempty"`
	ARM64    string `json:"arm64,omitempty"`
	HTTPBoot string `json:"httpboot,omitempty"`
	// RouterAdvert sends IPv6 router advertisements without prefixes on
	// served interfaces so iPXE does not wait for IPv6 autoconfiguration
	// (default on; set false to turn off).
	RouterAdvert *bool  `json:"router-advert,omitempty"`
	Digest       string `json:"digest,omitempty"`
}

// NetbootEnable is the body of POST /netboot/enable: add or change one
// interface and turn network boot on.
type NetbootEnable struct {
	NetbootInterface
	Root     string `json:"root,omitempty"`
	HTTPPort int    `json:"http-port,omitempty"`
}

// NetbootDisable is the body of POST /netboot/disable.
type NetbootDisable struct {
	// Interface to stop serving; empty turns network boot off entirely.
	Interface string `json:"interface,omitempty"`
}

// NetbootServiceStats are one part's counters.
type NetbootServiceStats map[string]uint64

// NetbootStatus is the state of the network boot service.
type NetbootStatus struct {
	Enabled bool `json:"enabled"`
	Running bool `json:"running"`
	// Error is why the service is not running although enabled.
	Error      string             `json:"error,omitempty"`
	Interfaces []NetbootInterface `json:"interfaces,omitempty"`
	// Addresses are where each part listens.
	Addresses map[string][]string `json:"addresses,omitempty"`
	// Services maps dhcp, tftp and http to their counters.
	Services map[string]NetbootServiceStats `json:"services,omitempty"`
	Hosts    int                            `json:"hosts"`
	Leases   int                            `json:"leases"`
}

// NetbootLease is one dynamic DHCP lease.
type NetbootLease struct {
	IP        string `json:"ip"`
	MAC       string `json:"mac,omitempty"`
	Hostname  string `json:"hostname,omitempty"`
	Interface string `json:"interface,omitempty"`
	// Expires is a Unix time.
	Expires int64 `json:"expires"`
	// State is bound, released, declined or expired.
	State string `json:"state"`
}
