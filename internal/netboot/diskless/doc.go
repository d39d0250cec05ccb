// Package diskless serves shared diskless roots over NBD: every client
// boots the same read-only base image (an ext4 image from the image
// store) and gets its own copy-on-write layer, kept on the server under
// ClientsDir/<mac>/ (overlay.img, a sparse file, and overlay.map, one bit
// per 4 KiB chunk), so nothing is copied per client and each client's
// changes survive its reboot and the daemon's restart.
//
// Contract with the netboot service:
//
//	srv, _ := diskless.New(diskless.Config{ClientsDir: data + "/netboot/clients", Image: imageForMAC, Log: log})
//	ln, _ := net.Listen("tcp", ifaceIP+":10809") // only where configured
//	go srv.Serve(ctx, ln)
//	cmdline := diskless.KernelArgs(ifaceIP+":10809") // for the host's iPXE script
//
// The client's initramfs (BuildInitramfs: busybox, Debian's nbd-client and
// the kernel's nbd/ext4/network modules) brings up its network, connects
// /dev/nbd0 to the export named by its own MAC and mounts it as /.
//
// Why NBD rather than NFS or an image fetched over HTTP: the server side is
// a small block protocol (no file handles to keep stable across restarts,
// no per-READ open/close as in go-nfs, no ESTALE), the union is a plain
// block-level copy-on-write that needs no overlayfs or nfsd on the host
// (this host has neither nbd nor nfsd), the client's page cache and ext4
// work as on a local disk, and the writes live on the server, durable at
// each FLUSH the client's kernel sends. The package does not know DHCP or
// the host database; Config.Image and Config.Allow are the hooks.
package diskless
