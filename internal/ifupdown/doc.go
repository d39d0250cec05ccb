// Package ifupdown reads, edits and writes interfaces(5) files in the
// ifupdown2 dialect (/etc/network/interfaces with source and
// source-directory includes) and validates the network they describe.
//
// A parsed File keeps the exact text of every line, so writing an untouched
// file gives back the same bytes, and edits change only the lines they are
// about: comments, unknown options and ordering survive. The package knows
// nothing of the live system; internal/hostnet turns a Config into netlink
// changes.
package ifupdown
