package swarm

import (
	"context"
	"errors"

	"github.com/xcore/runner/sandbox/internal/engine"
)

// ResolveImage returns the ID of an image on the manager. Tasks are created from that ID
// (no registry is asked: QueryRegistry false), so every node that may run the plugin
// must have the same image: `docker save | docker load` it there, or use a registry.
func (c *Client) ResolveImage(ctx context.Context, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return engine.ImageID(ctx, c.api, ref, "on the manager: load it on every node (docker save | docker load) or push it to a registry")
}

// BuildImage is not available on a cluster: an image built on the manager would exist
// there only (config validation rejects build = "dir" with this backend).
func (c *Client) BuildImage(context.Context, string, string, bool, func(string)) (string, string, error) {
	return "", "", errors.New("build = \"dir\" is not available with the swarm backend: build the image, then load it on every node or push it to a registry")
}
