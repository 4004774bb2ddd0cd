package sandbox

import (
	"context"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
)

// ResolveImage returns the ID of a LOCAL image reference. Nothing is pulled: a runner host
// may have no registry, and an image that silently changes under a tag is what the
// snapshot exists to notice.
func (c *Client) ResolveImage(ctx context.Context, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("image %q not found locally (nothing is pulled: build or load it first, e.g. `make images`)", ref)
	}
	if err != nil {
		return "", fmt.Errorf("inspect image %q: %w", ref, err)
	}
	return res.ID, nil
}
