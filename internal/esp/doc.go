// Package esp keeps EFI system partitions (ESPs) bootable, with the
// semantics and state files of proxmox-boot-tool: it formats and
// initialises ESPs (systemd-boot or GRUB), selects the kernels to keep,
// copies them with loader entries or a grub.cfg onto every listed ESP,
// handles kernel pins, and reports status.
//
// ESPs stay unmounted: the package finds partitions by reading sysfs, the
// GPT (package gpt) and FAT boot sectors (package fat) itself, reads ESPs
// with package fat and writes them with mtools at the partition's byte
// offset in its disk, so it works on kernels without vfat and hosts without
// udev. Every path is relative to Tool.Root, Tool.Sys, Tool.Dev and
// Tool.Proc, so tests run on temporary trees and disk images.
//
// It is a library used both by the standalone `berth boot` command (kernel
// hooks run it with no daemon) and by the daemon's API. It does not touch
// EFI variables.
package esp
