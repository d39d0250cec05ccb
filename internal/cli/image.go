package cli

import (
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	wire "github.com/berthhq/berth/api"
)

func (e *env) imageCmd() *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Images: import, build with debootstrap, derive disk images, list, inspect, remove"}
	c.AddCommand(e.imageList(), e.imageInspect(), e.imageImport(), e.imageBuild(), e.imageDisk(), e.imageRemove())
	return c
}

func (e *env) imageList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List images with size, file count, OS and formats",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var imgs []wire.Image
			if err := e.do(c.Context(), "GET", "/api/v1/images", nil, &imgs); err != nil {
				return err
			}
			return e.show(imgs, func(w io.Writer) {
				row(w, "NAME", "TYPE", "SIZE", "FILES", "ARCH", "OS", "FORMATS", "CREATED")
				for _, i := range imgs {
					row(w, i.Name, i.SourceType, humanSize(i.Size), i.Files, dash(i.Architecture), dash(i.OSRelease), strings.Join(i.Formats, ","), ts(i.Created))
				}
			})
		},
	}
}

func (e *env) imageInspect() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show one image: source, digest, size, OS, kernel, formats and their paths",
		Args:  exactArgs(1, "an image name"),
		RunE: func(c *cobra.Command, args []string) error {
			var i wire.Image
			if err := e.do(c.Context(), "GET", "/api/v1/images/"+url.PathEscape(args[0]), nil, &i); err != nil {
				return err
			}
			return e.show(i, func(w io.Writer) {
				kv(w, "name", i.Name, "source", i.Source, "type", i.SourceType, "created", ts(i.Created),
					"size", fmt.Sprintf("%s (%d bytes)", humanSize(i.Size), i.Size), "files", i.Files,
					"architecture", dash(i.Architecture), "os", dash(i.OSRelease), "kernel", dash(i.Kernel), "initrd", dash(i.Initrd),
					"digest", i.Digest, "formats", strings.Join(i.Formats, ","))
				for _, f := range i.Formats {
					kv(w, "path."+f, i.Paths[f])
				}
			})
		},
	}
}

func (e *env) imageImport() *cobra.Command {
	var bg bool
	c := &cobra.Command{
		Use:   "import NAME SOURCE",
		Short: "Import an image from a rootfs tarball (.tar, .tar.gz, .tar.xz, .tar.zst), a directory or an OCI archive on the node",
		Long: `Import an image from SOURCE, a path on the daemon's node (made absolute from
the current directory):

  - a root file system tarball, plain or compressed with gzip, xz, zstd or bzip2
    (detected from the content, not the name);
  - a directory, copied with owners, modes, links, devices and xattrs;
  - an OCI image archive (an oci-archive tarball as 'skopeo copy docker://…
    oci-archive:FILE' or 'buildah push … oci-archive:FILE' write it): the image
    for this node's architecture is chosen, its layers applied in order with
    whiteouts honoured and every blob's digest checked.

The image is stored once, read-only, and shared by every guest that uses it.
A failed import leaves nothing behind.`,
		Args: exactArgs(2, "an image name and a source path"),
		RunE: func(c *cobra.Command, args []string) error {
			src := args[1]
			if !filepath.IsAbs(src) && e.server == "" {
				if abs, err := filepath.Abs(src); err == nil {
					src = abs
				}
			}
			return e.runTask(c.Context(), "POST", "/api/v1/images", wire.ImageImport{Name: args[0], Source: src}, bg)
		},
	}
	asyncFlags(c, &bg)
	return c
}

func (e *env) imageBuild() *cobra.Command {
	var bg bool
	var b wire.ImageBuild
	c := &cobra.Command{
		Use:   "build debian NAME",
		Short: "Build a Debian image with debootstrap, optionally with ext4 and bootable raw/qcow2 disks",
		Long: `Build a Debian image with debootstrap from Debian's archive; its output is the
task log. --disk raw or --disk qcow2 also installs linux-image-amd64 and
systemd-sysv and makes a bootable GPT disk (extlinux); --disk ext4 makes an ext4
image of the root for UML guests. Disks of an existing image: 'berth image disk'.`,
		Args: exactArgs(2, "the distribution (debian) and an image name"),
		RunE: func(c *cobra.Command, args []string) error {
			b.Distribution, b.Name = args[0], args[1]
			return e.runTask(c.Context(), "POST", "/api/v1/images/build", b, bg)
		},
	}
	f := c.Flags()
	f.StringVar(&b.Suite, "suite", "bookworm", "Debian suite")
	f.StringVar(&b.Variant, "variant", "minbase", "debootstrap variant: minbase, buildd, fakechroot or - (standard)")
	f.StringSliceVar(&b.Include, "include", nil, "extra packages (comma-separated, repeatable)")
	f.StringVar(&b.Mirror, "mirror", "http://deb.debian.org/debian", "Debian archive URL")
	f.StringSliceVar(&b.Disks, "disk", nil, "also build disk images: ext4, raw, qcow2 (repeatable)")
	f.StringVar(&b.DiskSize, "size", "", "disk size, e.g. 4G (default: the root's size plus headroom)")
	asyncFlags(c, &bg)
	return c
}

func (e *env) imageDisk() *cobra.Command {
	var bg bool
	var d wire.ImageDiskRequest
	c := &cobra.Command{
		Use:   "disk NAME --format ext4|raw|qcow2 [--size 4G]",
		Short: "Derive disk images from an image: an ext4 root image, a bootable raw or qcow2 disk",
		Long: `Derive disk images from an image and keep them read-only beside it:

  ext4   root.ext4, the root as an ext4 file system (for UML ubd disks)
  raw    disk.raw, a bootable GPT disk: one partition with the root, extlinux,
         the image's kernel and initrd, root=PARTUUID=…, console on ttyS0
  qcow2  disk.qcow2, the same disk as qcow2

raw and qcow2 need a kernel in the image (build it with --disk raw, or
--include linux-image-amd64). --append adds to the bootable disks' kernel
command line. Existing disks of the image are replaced, unless guests use
the image (their overlays and COW files depend on the disks: exit 4).

Guests use them with 'berth vm create ID --disk image=NAME' (a per-VM qcow2
overlay on disk.qcow2 or disk.raw) and 'berth uml create ID --disk
image=NAME' (a per-guest COW file over root.ext4); nothing is copied.`,
		Args: exactArgs(1, "an image name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "POST", "/api/v1/images/"+url.PathEscape(args[0])+"/disks", d, bg)
		},
	}
	c.Flags().StringSliceVar(&d.Formats, "format", nil, "ext4, raw or qcow2 (repeatable)")
	c.Flags().StringVar(&d.Size, "size", "", "disk size, e.g. 4G (default: the root's size plus headroom)")
	c.Flags().StringVar(&d.Append, "append", "", "extra kernel command line of the bootable disks")
	asyncFlags(c, &bg)
	return c
}

func (e *env) imageRemove() *cobra.Command {
	var bg bool
	c := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an image and its disks (refused, exit 4, while a guest uses it)",
		Args:  exactArgs(1, "an image name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.runTask(c.Context(), "DELETE", "/api/v1/images/"+url.PathEscape(args[0]), nil, bg)
		},
	}
	asyncFlags(c, &bg)
	return c
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ci", float64(n)/float64(div), "KMGTPE"[exp])
}
