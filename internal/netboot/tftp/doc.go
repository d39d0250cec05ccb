// Package tftp is berth's read-only TFTP server for network boot: RFC 1350
// reads, option negotiation (RFC 2347) with blksize up to 65464 (RFC 2348),
// tsize and timeout (RFC 2349) and windowsize (RFC 7440).
//
// Contract with the netboot service:
//
//	srv, err := tftp.New(tftp.Config{Root: dir, Map: perClient, Log: log})
//	conn, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: ifaceIP, Port: 69})
//	go srv.Serve(ctx, conn) // returns when ctx is cancelled
//	st := srv.Stats()       // requests, transfers, bytes, errors, refused, malformed
//
// The caller binds the listening socket, so the server answers only where
// it was configured. Every transfer runs in its own goroutine with its own
// connected ephemeral socket (a new transfer ID, bound to the listener's
// address). The file is mapped read-only once and the mapping shared by
// all transfers of that version of the file (a few stay mapped while idle
// for the next clients); DATA packets are sent with sendmmsg straight from
// the mapping, a 4-byte header and the block as two iovecs, so no block is
// copied or allocated in user space; in windows, up to 64 blocks go in one
// UDP segmentation offload message (UDP_SEGMENT), which the kernel cuts
// into datagrams, with plain per-block messages where it refuses.
// Lock-step (RFC 1350) is a window of one block in the same send loop as
// RFC 7440 windows. The first
// Config.MaxThreads transfers wait for ACKs in blocking recv(2) (an OS
// thread each, the fastest answer to a lock-step client); later ones wait
// in Go's netpoller. A lost ACK is answered only by the retransmission
// timeout, never by a duplicate ACK (the Sorcerer's Apprentice bug); block
// numbers roll over after 65535 so files of any size can be sent. Windows
// are capped in bytes (Config.MaxWindowBytes) so a burst never outgrows a
// client's default socket buffer, and a partial ACK goes back to the first
// lost block. A file truncated while it is sent ends the transfer with an
// error packet (the kernel reports EFAULT; Go code never touches the
// mapping, so there is no SIGBUS).
//
// Write requests are answered with an access-violation error. Requested
// paths are resolved inside Root through os.Root: "..", symbolic links out
// of the root and NUL bytes are refused, logged and counted (Stats.Refused);
// an absolute path is taken relative to the root, as tftpd-hpa -s does.
// Malformed packets are dropped and counted (Stats.Malformed).
//
// The package does not know DHCP or the host database: per-client paths
// (pxelinux.cfg/01-aa-bb-…, per-MAC iPXE scripts) come from Config.Map.
package tftp
