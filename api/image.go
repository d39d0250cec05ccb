package api

// Image formats: the forms in which an image is available on the node.
const (
	// ImageFormatRootFS is the unpacked, read-only root directory that
	// containers use as their overlayfs lower layer. Every image has it.
	ImageFormatRootFS = "rootfs"
	// ImageFormatExt4 is an ext4 file system image of the root
	// (root.ext4), for UML ubd disks or as a VM data disk.
	ImageFormatExt4 = "ext4"
	// ImageFormatRaw is a bootable raw disk (disk.raw): GPT with a BIOS
	// boot partition and an ext4 root holding a kernel and extlinux.
	ImageFormatRaw = "raw"
	// ImageFormatQcow2 is the same bootable disk as qcow2 (disk.qcow2).
	ImageFormatQcow2 = "qcow2"
)

// Image describes one image in the node's image store. An image is stored
// once, read-only, and shared by every guest made from it.
type Image struct {
	// Name is the image's node-unique name: letters, digits, '.', '_'
	// and '-', starting with a letter or digit, at most 64 characters.
	Name string `json:"name"`
	// Source says where the image came from: the imported path (tar,
	// directory or OCI archive) or "debootstrap SUITE/VARIANT MIRROR".
	Source string `json:"source"`
	// SourceType is "tar", "dir", "oci" or "debootstrap".
	SourceType string `json:"source_type"`
	// Created is the Unix time the image was added.
	Created int64 `json:"created"`
	// Size is the total size in bytes of the root's regular files.
	Size int64 `json:"size"`
	// Files is the number of entries (files, directories, links, devices)
	// in the root.
	Files int64 `json:"files"`
	// Architecture is the Debian name of the CPU architecture of the
	// image's programs (amd64, arm64, …) when it could be told from its
	// ELF binaries, else empty.
	Architecture string `json:"architecture,omitempty"`
	// Digest is "sha256:" and the hex SHA-256 of the root's canonical
	// listing (paths, types, modes, owners, link targets and file
	// contents): two images with the same digest have the same tree.
	Digest string `json:"digest"`
	// OSRelease is PRETTY_NAME from the image's /etc/os-release (or
	// /usr/lib/os-release) when present.
	OSRelease string `json:"os_release,omitempty"`
	// Formats lists what is available: always "rootfs", plus "ext4",
	// "raw" and "qcow2" once built.
	Formats []string `json:"formats"`
	// Paths maps each format to its absolute path on the node, read-only.
	Paths map[string]string `json:"paths,omitempty"`
	// Kernel and Initrd name the kernel and initramfs inside the root
	// (e.g. /boot/vmlinuz-6.1.0-28-amd64) when the image has one.
	Kernel string `json:"kernel,omitempty"`
	Initrd string `json:"initrd,omitempty"`
}

// ImageImport is the body of an image import.
type ImageImport struct {
	// Name is the new image's name.
	Name string `json:"name"`
	// Source is an absolute path on the node: a root file system tarball
	// (.tar, .tar.gz, .tar.xz, .tar.zst — the compression is detected
	// from the content), a directory, or an OCI image archive.
	Source string `json:"source"`
}

// ImageBuild is the body of a debootstrap image build.
type ImageBuild struct {
	// Name is the new image's name.
	Name string `json:"name"`
	// Distribution is "debian", the only one so far.
	Distribution string `json:"distribution"`
	// Suite is the Debian suite (default bookworm).
	Suite string `json:"suite,omitempty"`
	// Variant is debootstrap's variant: minbase (default), buildd,
	// fakechroot or "-" for the standard one.
	Variant string `json:"variant,omitempty"`
	// Include lists extra packages to install.
	Include []string `json:"include,omitempty"`
	// Mirror is the Debian archive URL (default
	// http://deb.debian.org/debian).
	Mirror string `json:"mirror,omitempty"`
	// Disks asks for derived disk images built after the root:
	// "ext4", "raw", "qcow2". raw and qcow2 add linux-image-amd64 and
	// extlinux to the packages.
	Disks []string `json:"disks,omitempty"`
	// DiskSize is the size of the raw/qcow2 disk and of the ext4 image,
	// e.g. "2G" (default: the root's size plus headroom).
	DiskSize string `json:"disk_size,omitempty"`
}

// ImageDiskRequest asks for derived disk images of an existing image.
type ImageDiskRequest struct {
	// Formats are "ext4", "raw" and/or "qcow2". raw and qcow2 need a
	// kernel in the image (/boot/vmlinuz-*) and extlinux on the node.
	Formats []string `json:"formats"`
	// Size of the disk, e.g. "2G" (default: the root's size plus
	// headroom).
	Size string `json:"size,omitempty"`
	// Append is added to the kernel command line of the bootable disks.
	Append string `json:"append,omitempty"`
}
