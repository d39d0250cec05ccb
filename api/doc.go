// Package api defines berth's public wire types: the JSON bodies of the REST
// API under /api/v1, shared by the daemon, the Go client and the CLI. They
// are documented structs with JSON tags, separate from internal types, so
// the wire format changes only on purpose.
package api
