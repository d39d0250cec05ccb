package api

import (
	"context"
	"fmt"
	"net/http"

	wire "github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/image"
	"github.com/berthhq/berth/internal/task"
)

func (sv *Services) imageRoutes() []Route {
	name := Param{Name: "name", In: "path", Type: "string", Description: "image name"}
	return []Route{
		{Method: "GET", Path: "/api/v1/images", Summary: "List images with their size, digest, OS and available formats.", Role: wire.RoleAuditor, Resp: []wire.Image{},
			Handle: func(r *Request) (any, error) {
				s, err := sv.images()
				if err != nil {
					return nil, err
				}
				return s.List(r.Context())
			}},
		{Method: "GET", Path: "/api/v1/images/{name}", Summary: "One image.", Role: wire.RoleAuditor, Params: []Param{name}, Resp: wire.Image{},
			Handle: func(r *Request) (any, error) {
				s, err := sv.images()
				if err != nil {
					return nil, err
				}
				return s.Get(r.Context(), r.PathValue("name"))
			}},
		{Method: "POST", Path: "/api/v1/images", Summary: "Import an image from a tarball, directory or OCI archive on the node, as a task (admin: it reads any path).",
			Role: wire.RoleAdmin, Body: wire.ImageImport{}, Async: true, Handle: sv.importImage},
		{Method: "POST", Path: "/api/v1/images/build", Summary: "Build a Debian image with debootstrap (optionally with ext4/raw/qcow2 disks), as a task.",
			Role: wire.RoleAdmin, Body: wire.ImageBuild{}, Async: true, Handle: sv.buildImage},
		{Method: "POST", Path: "/api/v1/images/{name}/disks", Summary: "Derive disk images (ext4 root, bootable raw/qcow2) from an image, as a task.",
			Role: wire.RoleAdmin, Params: []Param{name}, Body: wire.ImageDiskRequest{}, Async: true, Handle: sv.imageDisks},
		{Method: "DELETE", Path: "/api/v1/images/{name}", Summary: "Remove an image and its files, as a task; 409 while a guest uses it.",
			Role: wire.RoleAdmin, Params: []Param{name}, Async: true, Handle: sv.removeImage},
	}
}

func (sv *Services) images() (*image.Store, error) {
	if sv.Images == nil {
		return nil, &wire.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "the image store is not configured on this daemon"}
	}
	return sv.Images, nil
}

func (sv *Services) importImage(r *Request) (any, error) {
	s, err := sv.images()
	if err != nil {
		return nil, err
	}
	var in wire.ImageImport
	if err := r.Decode(&in); err != nil {
		return nil, err
	}
	if err := s.CheckImport(r.Context(), in.Name, in.Source); err != nil {
		return nil, err
	}
	return sv.start(r, "imgimport", in.Name, func(ctx context.Context, l *task.Log) error {
		_, err := s.Import(ctx, in.Name, in.Source, l)
		return err
	})
}

func (sv *Services) buildImage(r *Request) (any, error) {
	s, err := sv.images()
	if err != nil {
		return nil, err
	}
	var in wire.ImageBuild
	if err := r.Decode(&in); err != nil {
		return nil, err
	}
	if in.Distribution != "debian" {
		return nil, Invalid("unknown distribution", map[string]string{"distribution": fmt.Sprintf("%q: only debian can be built (import other images)", in.Distribution)})
	}
	o := image.BuildOptions{Suite: in.Suite, Variant: in.Variant, Include: in.Include, Mirror: in.Mirror}
	d := image.DiskOptions{Formats: in.Disks, Size: in.DiskSize}
	if err := s.CheckBuild(r.Context(), in.Name, &o, &d); err != nil {
		return nil, err
	}
	return sv.start(r, "imgbuild", in.Name, func(ctx context.Context, l *task.Log) error {
		if _, err := s.Build(ctx, in.Name, o, l); err != nil {
			return err
		}
		if len(d.Formats) == 0 {
			return nil
		}
		_, err := s.MakeDisks(ctx, in.Name, d, l)
		return err
	})
}

func (sv *Services) imageDisks(r *Request) (any, error) {
	s, err := sv.images()
	if err != nil {
		return nil, err
	}
	var in wire.ImageDiskRequest
	if err := r.Decode(&in); err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	d := image.DiskOptions{Formats: in.Formats, Size: in.Size, Append: in.Append}
	if err := s.CheckDisks(r.Context(), name, &d); err != nil {
		return nil, err
	}
	return sv.start(r, "imgdisk", name, func(ctx context.Context, l *task.Log) error {
		_, err := s.MakeDisks(ctx, name, d, l)
		return err
	})
}

func (sv *Services) removeImage(r *Request) (any, error) {
	s, err := sv.images()
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	// Refuse at once (404, 409) rather than in the task.
	if err := s.CheckRemove(r.Context(), name); err != nil {
		return nil, err
	}
	return sv.start(r, "imgdel", name, func(ctx context.Context, l *task.Log) error {
		l.Printf("removing image %s", name)
		return s.Remove(ctx, name)
	})
}
