// Package engine holds what the two Docker backends (sandbox/docker and sandbox/swarm)
// say to the engine the same way: a demultiplexed log stream, a deterministic
// environment, the image events that may move a reference, the labels every instance
// carries, the engine's form of registry credentials, and image IDs.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
)

// Demux turns the engine's multiplexed stdout/stderr log stream (containers run without
// a TTY) into one reader of both, interleaved as they come. Closing it closes the
// engine's stream too, so a caller that stops reading early does not leave the copy
// goroutine blocked.
func Demux(res io.ReadCloser) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, res)
		res.Close()
		pw.CloseWithError(err)
	}()
	return readCloser{pr, res}
}

type readCloser struct {
	*io.PipeReader
	src io.Closer
}

func (r readCloser) Close() error {
	_ = r.src.Close()
	return r.PipeReader.Close()
}

// Env renders env sorted by name so the request is deterministic.
func Env(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// ImageActions are the image events after which a local reference may resolve to another
// image ID. Checked on this engine (20.10, legacy builder): `docker build -t` emits "tag"
// for each -t (its intermediate containers emit container create/destroy, unlabelled);
// `docker tag` emits "tag"; `docker rmi` emits "untag" per reference and "delete". Newer
// engines building with BuildKit also emit "create" for the exported image before "tag".
var ImageActions = []events.Action{
	events.ActionTag, events.ActionUnTag, events.ActionDelete, events.ActionLoad,
	events.ActionImport, events.ActionPull, events.ActionCreate,
}

// Labels are the labels of every instance of s: whose it is, and the snapshot it runs.
func Labels(s sandbox.Spec, runnerID string) map[string]string {
	return map[string]string{
		sandbox.LabelRunner:     runnerID,
		sandbox.LabelPlugin:     s.Plugin,
		sandbox.LabelGeneration: strconv.Itoa(s.Generation),
		sandbox.LabelSnapshot:   s.Snapshot,
		sandbox.LabelImage:      s.ImageID,
		sandbox.LabelSpec:       s.SpecLabel,
	}
}

// RegistryAuth encodes credentials as the engine takes them (X-Registry-Auth).
func RegistryAuth(a sandbox.RegistryAuth) (string, error) {
	enc, err := authconfig.Encode(registry.AuthConfig{
		Username: a.Username, Password: a.Password,
		IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
		ServerAddress: a.ServerAddress,
	})
	if err != nil {
		// The wrapped error may quote the credentials: keep only what it says.
		return "", fmt.Errorf("encode registry credentials: %w", errors.Unwrap(err))
	}
	return enc, nil
}

// ImageID asks the engine for the ID of its image ref (nothing is pulled). A missing
// image is sandbox.ErrNotFound, said with where it is missing and what to do (missing:
// e.g. "locally: build it … or load it … first").
func ImageID(ctx context.Context, api client.ImageAPIClient, ref, missing string) (string, error) {
	res, err := api.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("image %q %w %s", ref, sandbox.ErrNotFound, missing)
	}
	if err != nil {
		return "", fmt.Errorf("inspect image %q: %w", ref, err)
	}
	return res.ID, nil
}
