package docker

import (
	"context"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/internal/engine"
)

// pullTimeout bounds one pull: a registry that stalls must not hold an engine slot
// forever.
const pullTimeout = 15 * time.Minute

// InspectImage returns what the engine has under ref: its ID and the registry digests
// it recorded. A missing image is sandbox.ErrNotFound.
func (c *Client) InspectImage(ctx context.Context, ref string) (sandbox.Image, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return sandbox.Image{}, fmt.Errorf("image %q %w locally", ref, sandbox.ErrNotFound)
	}
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("inspect image %q: %w", ref, err)
	}
	return sandbox.Image{ID: res.ID, RepoDigests: res.RepoDigests, Size: res.Size}, nil
}

// Platform is the engine's OS and architecture: the manifest of an index it pulls.
func (c *Client) Platform(ctx context.Context) (sandbox.Platform, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	v, err := c.api.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return sandbox.Platform{}, fmt.Errorf("engine version: %w", err)
	}
	p := sandbox.Platform{OS: v.Os, Architecture: v.Arch}
	if p.Architecture == "arm64" {
		p.Variant = "v8"
	}
	return p, nil
}

// PullImage has the engine pull ref (repo:tag or repo@digest) with auth, the way
// `docker pull` does (X-Registry-Auth), passing its progress to progress (may be nil)
// as it comes, and returns the image it then has. A pull that fails leaves what the
// engine had under ref untouched.
func (c *Client) PullImage(ctx context.Context, ref string, auth sandbox.RegistryAuth, progress func(sandbox.PullProgress)) (sandbox.Image, error) {
	ctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	encoded, err := engine.RegistryAuth(auth)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	res, err := c.api.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: encoded})
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	defer res.Close()
	var t pullTracker
	for m, err := range res.JSONMessages(ctx) {
		if err != nil {
			return sandbox.Image{}, fmt.Errorf("pull %s: %w", ref, err)
		}
		if m.Error != nil {
			return sandbox.Image{}, fmt.Errorf("pull %s: %s", ref, strings.TrimSpace(m.Error.Message))
		}
		if t.add(m) && progress != nil {
			progress(t.progress())
		}
	}
	img, err := c.InspectImage(ctx, ref)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if progress != nil {
		p := t.progress()
		p.LayersDone = p.Layers
		progress(p)
	}
	return img, nil
}

// pullTracker sums the engine's per-layer progress messages. Checked on this engine
// (20.10): each layer says "Pulling fs layer" (or "Already exists"), then, when big
// enough, "Downloading" with current/total bytes, then "Download complete" and "Pull
// complete"; small layers skip "Downloading". The last messages are "Digest: sha256:…"
// and "Status: …".
type pullTracker struct {
	layers map[string]*layerProgress
	order  []string
	digest string
}

type layerProgress struct {
	done, total int64
	complete    bool
}

// add takes one message; true when the progress changed.
func (t *pullTracker) add(m jsonstream.Message) bool {
	if d, ok := strings.CutPrefix(m.Status, "Digest: "); ok {
		t.digest = strings.TrimSpace(d)
		return true
	}
	if m.ID == "" || strings.HasSuffix(m.Status, ": Pulling from") || strings.HasPrefix(m.Status, "Pulling from") {
		return false
	}
	if t.layers == nil {
		t.layers = map[string]*layerProgress{}
	}
	l := t.layers[m.ID]
	if l == nil {
		l = &layerProgress{}
		t.layers[m.ID] = l
		t.order = append(t.order, m.ID)
	}
	switch {
	case m.Status == "Downloading" && m.Progress != nil:
		l.done, l.total = m.Progress.Current, max(l.total, m.Progress.Total)
	case m.Status == "Download complete", m.Status == "Verifying Checksum":
		l.done = max(l.done, l.total)
	case m.Status == "Pull complete", m.Status == "Already exists":
		l.done, l.complete = max(l.done, l.total), true
	default:
		return false
	}
	return true
}

func (t *pullTracker) progress() sandbox.PullProgress {
	p := sandbox.PullProgress{Digest: t.digest, Layers: len(t.order)}
	for _, id := range t.order {
		l := t.layers[id]
		p.Done += l.done
		p.Total += l.total
		if l.complete {
			p.LayersDone++
		}
	}
	return p
}
