// Package dhcp is berth's DHCPv4, BOOTP and ProxyDHCP server for network
// boot: the message codec (RFC 951, 1542, 2131, 2132, 3396), static hosts
// by MAC, dynamic pools whose leases live in a journal that is fsynced
// before a client is acknowledged (so no address is handed out twice
// after a crash or restart), DECLINE/RELEASE, BOOTP replies without
// option 53, PXE boot file selection by client architecture (RFC 4578),
// iPXE detection (user class "iPXE", option 175) answered with an HTTP
// script URL instead of a loader, and ProxyDHCP on ports 67 and 4011.
//
// It answers only on the interfaces of its scopes (SO_BINDTODEVICE). It
// knows nothing of the store, TFTP or HTTP: the netboot service hands it
// a host lookup function and the URLs to give out.
package dhcp
