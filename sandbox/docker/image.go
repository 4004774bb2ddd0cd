package docker

import (
	"context"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/xcore/runner/sandbox"
)

// ResolveImage returns the ID of a LOCAL image reference. Nothing is pulled: a runner host
// may have no registry, and an image that silently changes under a tag is what the
// snapshot exists to notice. A missing image is sandbox.ErrNotFound.
func (c *Client) ResolveImage(ctx context.Context, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("image %q %w locally: build it (docker build -t %s <dir>) or load it (docker load) first", ref, sandbox.ErrNotFound, ref)
	}
	if err != nil {
		return "", fmt.Errorf("inspect image %q: %w", ref, err)
	}
	return res.ID, nil
}
