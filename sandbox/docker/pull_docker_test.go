package docker

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/xcore/runner/registry/registrytest"
	"github.com/xcore/runner/sandbox"
)

// The engine pulls from a registry that wants credentials with the ones it is handed
// (X-Registry-Auth), reports progress and records the registry digest; a refused or a
// broken pull leaves the engine without the image and says why.
func TestPullImage(t *testing.T) {
	t.Parallel()
	c := dockerForEventsTest(t, "pulltest-"+evRandomHex(t))
	reg, err := registrytest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	const user, pass = "team", "pull-Secret-42"
	reg.RequireAuth(user, pass)
	ref := reg.Host + "/team/pulltest:1"
	img, err := registrytest.Build(registrytest.Image{Files: map[string]string{"/x": evRandomHex(t)}, Platform: v1.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	digest, err := registrytest.Push(context.Background(), ref, img, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", ref).Run() })
	ctx := context.Background()

	_, err = c.PullImage(ctx, ref, sandbox.RegistryAuth{Username: user, Password: "wrong", ServerAddress: reg.Host}, nil)
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong password: %v; want an error that does not show it", err)
	}
	if _, err := c.InspectImage(ctx, ref); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("after a refused pull: %v, want not found", err)
	}

	var last sandbox.PullProgress
	got, err := c.PullImage(ctx, ref, sandbox.RegistryAuth{Username: user, Password: pass, ServerAddress: reg.Host}, func(p sandbox.PullProgress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	want := reg.Host + "/team/pulltest@" + digest
	if !slices.Contains(got.RepoDigests, want) || !strings.HasPrefix(got.ID, "sha256:") {
		t.Errorf("pulled %+v, want RepoDigests with %s", got, want)
	}
	if last.Digest != digest || last.Percent() != 100 || last.Layers != 1 {
		t.Errorf("last progress %+v (%d%%), want digest %s, 1 layer, 100%%", last, last.Percent(), digest)
	}
	if fmt.Sprintf("%v %+v %#v", sandbox.RegistryAuth{Password: pass}, sandbox.RegistryAuth{Password: pass}, sandbox.RegistryAuth{Password: pass}) != "[redacted] [redacted] [redacted]" {
		t.Error("a RegistryAuth prints its fields")
	}

	// A new image under the tag whose blobs fail: the pull fails, the old image stays.
	img2, _ := registrytest.Build(registrytest.Image{Files: map[string]string{"/x": evRandomHex(t)}})
	if _, err := registrytest.Push(ctx, ref, img2, user, pass); err != nil {
		t.Fatal(err)
	}
	reg.FailBlobs(true)
	if _, err := c.PullImage(ctx, ref, sandbox.RegistryAuth{Username: user, Password: pass, ServerAddress: reg.Host}, nil); err == nil {
		t.Error("a pull whose blobs fail succeeded")
	}
	if after, err := c.InspectImage(ctx, ref); err != nil || after.ID != got.ID {
		t.Errorf("after a failed pull the tag is %+v, %v; want the old image %s", after, err, got.ID)
	}
	if p, err := c.Platform(ctx); err != nil || p.OS != "linux" || p.Architecture == "" {
		t.Errorf("Platform = %v, %v", p, err)
	}
}
