// Package registry is what the runner knows of container registries without asking
// one: image references parsed and normalised the way docker does, the errors a registry
// gives said for a human, and the credential type that never prints its secret. Asking
// (a manifest HEAD with the user's Docker credentials) is registry/remote's, so that the
// runner's orchestration does not depend on Docker's credential code.
package registry

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
)

// Ref is a parsed image reference: repo:tag, repo@sha256:…, or repo:tag@sha256:… (the
// digest wins, as with docker). A reference with neither tag nor digest means :latest.
type Ref struct {
	raw      string
	repo     string // as written, without tag or digest: "team/hello", "127.0.0.1:5000/team/hello"
	tag      string // explicit or "latest"; "" when pinned without a tag
	digest   string // "sha256:…" when pinned
	registry string // normalised host: "index.docker.io", "127.0.0.1:5000"
	path     string // normalised repository path: "library/hello", "team/hello"
	ctx      name.Repository
}

// Parse parses an image reference as docker would, normalising short Docker Hub names
// ("hello" is index.docker.io/library/hello:latest).
func Parse(s string) (Ref, error) {
	if strings.TrimSpace(s) != s || s == "" {
		return Ref{}, fmt.Errorf("%q is not an image reference: it must be non-empty, without spaces", s)
	}
	base, _, pinned := strings.Cut(s, "@")
	repo, tag := base, ""
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		repo, tag = base[:i], base[i+1:]
		if tag == "" {
			return Ref{}, fmt.Errorf("%q is not an image reference: empty tag after ':'", s)
		}
	}
	// The engine parses with distribution/reference: what it refuses is refused here,
	// before anything runs.
	if _, err := reference.ParseNormalizedNamed(s); err != nil {
		return Ref{}, fmt.Errorf("%q is not an image reference: %v", s, err)
	}
	r := Ref{raw: s, repo: repo, tag: tag}
	var err error
	if pinned {
		var d name.Digest
		if d, err = name.NewDigest(s); err == nil {
			r.ctx, r.digest = d.Context(), d.DigestStr()
		}
	} else {
		var t name.Tag
		if t, err = name.NewTag(s); err == nil {
			r.ctx, r.tag = t.Context(), t.TagStr()
		}
	}
	if err != nil {
		return Ref{}, fmt.Errorf("%q is not an image reference: %s", s, strings.TrimPrefix(err.Error(), "could not parse reference: "))
	}
	if tag != "" {
		if _, err := name.NewTag(repo + ":" + tag); err != nil {
			return Ref{}, fmt.Errorf("%q is not an image reference: %v", s, err)
		}
	}
	r.registry, r.path = r.ctx.RegistryStr(), r.ctx.RepositoryStr()
	return r, nil
}

// String is the reference as configured.
func (r Ref) String() string { return r.raw }

// Pinned reports whether the reference names a digest: what it runs never moves.
func (r Ref) Pinned() bool { return r.digest != "" }

// Tag is the tag followed ("latest" when none was written); "" for a digest without one.
func (r Ref) Tag() string { return r.tag }

// Digest is the pinned digest, "" for a tag.
func (r Ref) Digest() string { return r.digest }

// Registry is the normalised registry host ("index.docker.io" for Docker Hub).
func (r Ref) Registry() string { return r.registry }

// Path is the repository path inside its registry ("team/hello", "library/hello").
func (r Ref) Path() string { return r.path }

// Repository is the normalised repository name, registry included: two references
// name the same repository iff their Repository is equal.
func (r Ref) Repository() string { return r.ctx.Name() }

// Repo is the normalised repository, for asking its registry.
func (r Ref) Repo() name.Repository { return r.ctx }

// Name is the normalised reference: the digest when pinned, else the tag.
func (r Ref) Name() name.Reference {
	if r.digest != "" {
		return r.ctx.Digest(r.digest)
	}
	return r.ctx.Tag(r.tag)
}

// Key is the normalised reference: equal for every spelling of the same tag or digest
// ("hello", "hello:latest", "docker.io/library/hello:latest"), so that several plugins
// on one image share one pull and one poll.
func (r Ref) Key() string {
	if r.digest != "" {
		return r.ctx.Name() + "@" + r.digest
	}
	return r.ctx.Name() + ":" + r.tag
}

// Engine is the reference to hand the engine: as written, except that a pinned
// reference drops its tag (repo@digest), since the digest is what is meant.
func (r Ref) Engine() string {
	if r.digest != "" {
		return r.repo + "@" + r.digest
	}
	if strings.LastIndexByte(r.raw, ':') > strings.LastIndexByte(r.raw, '/') {
		return r.raw
	}
	return r.raw + ":" + r.tag
}

// Familiar is the short form for messages: repo:tag as written, or repo@digest.
func (r Ref) Familiar() string {
	if r.digest != "" {
		if r.tag != "" && strings.Contains(r.raw, ":"+r.tag+"@") {
			return r.repo + ":" + r.tag + "@" + r.digest
		}
		return r.repo + "@" + r.digest
	}
	return r.repo + ":" + r.tag
}

// RepoDigests returns the digests of this reference's repository among an image's
// repo digests as the engine lists them ("team/hello@sha256:…", in the engine's
// familiar form): what this image is known as in that registry.
func (r Ref) RepoDigests(repoDigests []string) []string {
	var out []string
	for _, rd := range repoDigests {
		d, err := name.NewDigest(rd)
		if err != nil || d.Context().Name() != r.ctx.Name() {
			continue
		}
		out = append(out, d.DigestStr())
	}
	return out
}
