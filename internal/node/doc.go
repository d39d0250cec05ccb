// Package node reports on and acts on the host berth runs on: it builds the
// node status (kernel, CPU, memory, root filesystem, boot mode, KSM) from
// /proc, /sys and statfs, validates the per-node configuration, and wakes
// other nodes with Wake-on-LAN magic packets.
//
// It only reads the host and sends one broadcast packet; it does not change
// host settings (hostname, KSM tuning, network configuration), store the
// node config, or serve HTTP. Those belong to the daemon and store packages.
package node
