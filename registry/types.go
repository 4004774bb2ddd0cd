package registry

import (
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Descriptor is what a registry serves for a reference.
type Descriptor struct {
	Digest    string // "sha256:…" of the manifest or index
	MediaType string
	Size      int64
}

// Index reports whether the descriptor is a multi-platform index (OCI index or Docker
// manifest list).
func (d Descriptor) Index() bool {
	mt := types.MediaType(d.MediaType)
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

// Platform is an engine's platform, to pick a manifest out of an index.
type Platform struct {
	OS, Architecture, Variant string
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Check is the answer to "has this tag moved away from what the engine has?".
type Check struct {
	Remote string // the digest the tag points at now (the index digest for an index)
	Moved  bool
	// Known: the engine has the image of Remote for its platform, by the index digest
	// or the platform manifest's digest.
	Known bool
}

// ConfigHint is where Docker users keep their credentials, for error messages: the
// file of DOCKER_CONFIG when set, else ~/.docker/config.json.
func ConfigHint() string {
	if dir := os.Getenv("DOCKER_CONFIG"); dir != "" {
		return filepath.Join(dir, "config.json")
	}
	return "~/.docker/config.json"
}
