package docker

import (
	"context"
	"fmt"

	"github.com/xcore/runner/sandbox/internal/engine"
)

// ResolveImage returns the ID of a LOCAL image reference. Nothing is pulled: a runner host
// may have no registry, and an image that silently changes under a tag is what the
// snapshot exists to notice. A missing image is sandbox.ErrNotFound.
func (c *Client) ResolveImage(ctx context.Context, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return engine.ImageID(ctx, c.api, ref, fmt.Sprintf("locally: build it (docker build -t %s <dir>) or load it (docker load) first", ref))
}
