// Package oci reads OCI image layouts (the content of an oci-archive
// tarball as skopeo or buildah write it): oci-layout, index.json, image
// indexes, manifests and content-addressed blobs. It resolves an image to
// its ordered layers and checks every digest it reads; it does not unpack
// layers (see package tarx) and never talks to a registry.
package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Media types berth understands.
const (
	MediaTypeIndex          = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest       = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeLayer          = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeLayerGzip      = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeLayerZstd      = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeConfig         = "application/vnd.oci.image.config.v1+json"
)

// Platform names an OS and CPU architecture (GOARCH names).
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// Descriptor points at a blob.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Index is an image index (index.json or a nested index blob).
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Manifests     []Descriptor `json:"manifests"`
}

// Manifest is an image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Config is the part of an image configuration berth reads.
type Config struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Layout is an OCI image layout directory.
type Layout struct {
	dir string
}

// maxJSON bounds the JSON documents read from a layout.
const maxJSON = 4 << 20

// Open checks that dir holds an OCI image layout (oci-layout with version
// 1.0.0 and an index.json).
func Open(dir string) (*Layout, error) {
	b, err := readLimited(filepath.Join(dir, "oci-layout"))
	if err != nil {
		return nil, fmt.Errorf("not an OCI image layout: %w", err)
	}
	var ol struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &ol); err != nil {
		return nil, fmt.Errorf("oci-layout: %w", err)
	}
	if ol.Version != "1.0.0" {
		return nil, fmt.Errorf("oci-layout: unsupported imageLayoutVersion %q (want 1.0.0)", ol.Version)
	}
	return &Layout{dir: dir}, nil
}

func readLimited(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSON+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJSON {
		return nil, fmt.Errorf("%s: larger than %d bytes", filepath.Base(p), maxJSON)
	}
	return b, nil
}

var digestRE = regexp.MustCompile(`^(sha256):([a-f0-9]{64})$|^(sha512):([a-f0-9]{128})$`)

// ParseDigest splits "ALG:HEX" into its parts, accepting only sha256 and
// sha512 with lower-case hex of the right length, so a digest can never
// name a path outside blobs/ALG/.
func ParseDigest(d string) (alg, hexsum string, err error) {
	m := digestRE.FindStringSubmatch(d)
	if m == nil {
		return "", "", fmt.Errorf("bad digest %q: want sha256:<64 hex digits> or sha512:<128 hex digits>", d)
	}
	if m[1] != "" {
		return m[1], m[2], nil
	}
	return m[3], m[4], nil
}

// BlobPath returns the file of a blob, after checking the digest's form.
func (l *Layout) BlobPath(digest string) (string, error) {
	alg, hx, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(l.dir, "blobs", alg, hx), nil
}

// VerifiedReader reads a blob and, at EOF, fails unless the content
// matches its digest and size.
type VerifiedReader struct {
	f      *os.File
	h      hash.Hash
	want   string
	size   int64
	n      int64
	digest string
}

// OpenBlob opens a blob for reading with its digest and size checked as it
// is read; read it to EOF (Verify) to get the check's result.
func (l *Layout) OpenBlob(d Descriptor) (*VerifiedReader, error) {
	p, err := l.BlobPath(d.Digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	alg, hx, _ := ParseDigest(d.Digest)
	var h hash.Hash = sha256.New()
	if alg == "sha512" {
		h = newSHA512()
	}
	return &VerifiedReader{f: f, h: h, want: hx, size: d.Size, digest: d.Digest}, nil
}

func (v *VerifiedReader) Read(p []byte) (int, error) {
	n, err := v.f.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if errors.Is(err, io.EOF) {
		if verr := v.check(); verr != nil {
			return n, verr
		}
	}
	return n, err
}

func (v *VerifiedReader) check() error {
	if v.size > 0 && v.n != v.size {
		return fmt.Errorf("blob %s: %d bytes, descriptor says %d", v.digest, v.n, v.size)
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
		return fmt.Errorf("blob %s: content digest is %s: the archive is corrupt", v.digest, got)
	}
	return nil
}

// Verify reads the rest of the blob and checks its digest and size.
func (v *VerifiedReader) Verify() error {
	if _, err := io.Copy(io.Discard, v); err != nil {
		return err
	}
	return v.check()
}

// Close closes the blob.
func (v *VerifiedReader) Close() error { return v.f.Close() }

func (l *Layout) readJSON(d Descriptor, v any) error {
	r, err := l.OpenBlob(d)
	if err != nil {
		return err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxJSON+1))
	if err != nil {
		return err
	}
	if len(b) > maxJSON {
		return fmt.Errorf("blob %s: larger than %d bytes", d.Digest, maxJSON)
	}
	if err := r.Verify(); err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return nil
}

// Index reads index.json.
func (l *Layout) Index() (Index, error) {
	var ix Index
	b, err := readLimited(filepath.Join(l.dir, "index.json"))
	if err != nil {
		return ix, fmt.Errorf("index.json: %w", err)
	}
	if err := json.Unmarshal(b, &ix); err != nil {
		return ix, fmt.Errorf("index.json: %w", err)
	}
	return ix, nil
}

// Resolve picks the image manifest for arch (a GOARCH name) on linux: from
// index.json, through nested indexes, to one manifest. With several
// candidates it takes the one whose platform matches; with exactly one
// manifest it takes that one.
func (l *Layout) Resolve(arch string) (Manifest, error) {
	ix, err := l.Index()
	if err != nil {
		return Manifest{}, err
	}
	for depth := 0; depth < 4; depth++ {
		d, err := Select(ix.Manifests, arch)
		if err != nil {
			return Manifest{}, err
		}
		switch d.MediaType {
		case MediaTypeIndex, MediaTypeDockerList:
			ix = Index{}
			if err := l.readJSON(d, &ix); err != nil {
				return Manifest{}, err
			}
			continue
		case MediaTypeManifest, MediaTypeDockerManifest, "":
			var m Manifest
			if err := l.readJSON(d, &m); err != nil {
				return Manifest{}, err
			}
			if len(m.Layers) == 0 && m.Config.Digest == "" {
				return Manifest{}, fmt.Errorf("manifest %s has neither config nor layers", d.Digest)
			}
			return m, nil
		default:
			return Manifest{}, fmt.Errorf("manifest %s: unsupported media type %q", d.Digest, d.MediaType)
		}
	}
	return Manifest{}, errors.New("image indexes nested too deeply")
}

// Select chooses the descriptor for linux/arch among ds.
func Select(ds []Descriptor, arch string) (Descriptor, error) {
	switch len(ds) {
	case 0:
		return Descriptor{}, errors.New("the image index lists no manifests")
	case 1:
		return ds[0], nil
	}
	var names []string
	for _, d := range ds {
		if d.Platform == nil {
			names = append(names, "?")
			continue
		}
		if d.Platform.Architecture == arch && (d.Platform.OS == "linux" || d.Platform.OS == "") {
			return d, nil
		}
		names = append(names, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	return Descriptor{}, fmt.Errorf("no manifest for linux/%s among %d (%s): import an archive made for this platform", arch, len(ds), strings.Join(names, ", "))
}

// Config reads the manifest's image configuration.
func (l *Layout) Config(m Manifest) (Config, error) {
	var c Config
	if m.Config.Digest == "" {
		return c, nil
	}
	err := l.readJSON(m.Config, &c)
	return c, err
}
