package docker

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/xcore/runner/sandbox"
)

func baseSpec() sandbox.Spec {
	return sandbox.Spec{
		Plugin: "hello", Generation: 3, Image: "xcore-examples/hello:latest", ImageID: "sha256:abc",
		Snapshot: "deadbeef", SpecLabel: `{"image_id":"sha256:abc"}`, Env: map[string]string{"PORT": "8080", "A": "1"}, Port: 8080, Publish: true,
		CPUs: 0.5, Memory: 128 << 20, Pids: 64, Network: sandbox.NetworkBridge, ReadOnly: true,
		User: "65532:65532", StopTimeout: 10 * time.Second,
	}
}

func TestCreateOptionsHardening(t *testing.T) {
	t.Parallel()
	o := createOptions(baseSpec(), "r1", "xcore-r1")
	hc, cfg := o.HostConfig, o.Config

	if o.Name != "xcore-hello-3-r1" {
		t.Errorf("name = %q", o.Name)
	}
	if hc.NanoCPUs != 500_000_000 || hc.Memory != 128<<20 || hc.MemorySwap != hc.Memory || *hc.PidsLimit != 64 {
		t.Errorf("limits: cpus=%d mem=%d swap=%d pids=%d", hc.NanoCPUs, hc.Memory, hc.MemorySwap, *hc.PidsLimit)
	}
	if !reflect.DeepEqual(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 {
		t.Errorf("caps: drop=%v add=%v", hc.CapDrop, hc.CapAdd)
	}
	if !reflect.DeepEqual(hc.SecurityOpt, []string{"no-new-privileges"}) || hc.Privileged {
		t.Errorf("security: %v privileged=%v", hc.SecurityOpt, hc.Privileged)
	}
	if !hc.ReadonlyRootfs || hc.Tmpfs["/tmp"] != tmpfsOptions {
		t.Errorf("rootfs: ro=%v tmpfs=%v", hc.ReadonlyRootfs, hc.Tmpfs)
	}
	if len(hc.Binds) != 0 || len(hc.Mounts) != 0 {
		t.Errorf("unexpected mounts: %v %v", hc.Binds, hc.Mounts)
	}
	if cfg.User != "65532:65532" || *cfg.StopTimeout != 10 {
		t.Errorf("user=%q stop=%d", cfg.User, *cfg.StopTimeout)
	}
	if !reflect.DeepEqual(cfg.Env, []string{"A=1", "PORT=8080"}) {
		t.Errorf("env not sorted/rendered: %v", cfg.Env)
	}
	wantLabels := map[string]string{sandbox.LabelRunner: "r1", sandbox.LabelPlugin: "hello", sandbox.LabelGeneration: "3", sandbox.LabelSnapshot: "deadbeef", sandbox.LabelImage: "sha256:abc", sandbox.LabelSpec: `{"image_id":"sha256:abc"}`}
	if !reflect.DeepEqual(cfg.Labels, wantLabels) {
		t.Errorf("labels = %v", cfg.Labels)
	}
	if hc.NetworkMode != "xcore-r1" || o.NetworkingConfig == nil || o.NetworkingConfig.EndpointsConfig["xcore-r1"] == nil {
		t.Errorf("network: mode=%q nc=%+v", hc.NetworkMode, o.NetworkingConfig)
	}
	if hc.NetworkMode.IsHost() || hc.PidMode.IsHost() || hc.IpcMode.IsHost() {
		t.Error("host namespaces must never be shared")
	}
	if hc.RestartPolicy.Name != container.RestartPolicyDisabled {
		t.Errorf("restart policy %q: the runner supervises, not the engine", hc.RestartPolicy.Name)
	}
	bs := hc.PortBindings[network.MustParsePort("8080/tcp")]
	if len(bs) != 1 || bs[0].HostIP != loopback || bs[0].HostPort != "" {
		t.Errorf("port bindings = %+v, want one ephemeral binding on 127.0.0.1", hc.PortBindings)
	}
}

func TestCreateOptionsVariants(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(*sandbox.Spec)
		check func(*testing.T, sandbox.Spec)
	}{
		{"address reach publishes nothing", func(s *sandbox.Spec) { s.Publish = false }, func(t *testing.T, s sandbox.Spec) {
			if o := createOptions(s, "r", "n"); len(o.HostConfig.PortBindings) != 0 {
				t.Errorf("bindings = %v", o.HostConfig.PortBindings)
			}
		}},
		{"network none has no endpoint and no ports, only the run dir mounted", func(s *sandbox.Spec) { s.Network, s.RunDir = sandbox.NetworkNone, "/state/run/x" }, func(t *testing.T, s sandbox.Spec) {
			o := createOptions(s, "r", "n")
			if o.HostConfig.NetworkMode != "none" || o.NetworkingConfig != nil || len(o.HostConfig.PortBindings) != 0 {
				t.Errorf("mode=%q nc=%v bindings=%v", o.HostConfig.NetworkMode, o.NetworkingConfig, o.HostConfig.PortBindings)
			}
			m := o.HostConfig.Mounts
			if len(m) != 1 || m[0].Source != "/state/run/x" || m[0].Target != "/run/xcore" || m[0].Type != "bind" || len(o.HostConfig.Binds) != 0 {
				t.Errorf("mounts = %+v", m)
			}
		}},
		{"bridge gets the sidecar host entry", func(s *sandbox.Spec) {
			s.SidecarHost, s.SidecarAddr, s.RunDir = "xcore.internal", netip.MustParseAddr("172.18.0.1"), "/ignored"
		}, func(t *testing.T, s sandbox.Spec) {
			o := createOptions(s, "r", "n")
			if len(o.HostConfig.ExtraHosts) != 1 || o.HostConfig.ExtraHosts[0] != "xcore.internal:172.18.0.1" || len(o.HostConfig.Mounts) != 0 {
				t.Errorf("extra hosts = %v, mounts = %v", o.HostConfig.ExtraHosts, o.HostConfig.Mounts)
			}
		}},
		{"writable rootfs has no tmpfs", func(s *sandbox.Spec) { s.ReadOnly = false }, func(t *testing.T, s sandbox.Spec) {
			if o := createOptions(s, "r", "n"); o.HostConfig.ReadonlyRootfs || o.HostConfig.Tmpfs != nil {
				t.Errorf("ro=%v tmpfs=%v", o.HostConfig.ReadonlyRootfs, o.HostConfig.Tmpfs)
			}
		}},
		{"command replaces entrypoint", func(s *sandbox.Spec) { s.Command = []string{"/hello", "-v"} }, func(t *testing.T, s sandbox.Spec) {
			o := createOptions(s, "r", "n")
			if !reflect.DeepEqual([]string(o.Config.Entrypoint), []string{"/hello"}) || !reflect.DeepEqual([]string(o.Config.Cmd), []string{"-v"}) {
				t.Errorf("entrypoint=%v cmd=%v", o.Config.Entrypoint, o.Config.Cmd)
			}
		}},
		{"runtime passes through", func(s *sandbox.Spec) { s.Runtime = "runsc" }, func(t *testing.T, s sandbox.Spec) {
			if o := createOptions(s, "r", "n"); o.HostConfig.Runtime != "runsc" {
				t.Errorf("runtime=%q", o.HostConfig.Runtime)
			}
		}},
		{"sub-second stop timeout rounds up to 1s", func(s *sandbox.Spec) { s.StopTimeout = 200 * time.Millisecond }, func(t *testing.T, s sandbox.Spec) {
			if o := createOptions(s, "r", "n"); *o.Config.StopTimeout != 1 {
				t.Errorf("stop=%d", *o.Config.StopTimeout)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := baseSpec()
			tt.edit(&s)
			tt.check(t, s)
		})
	}
}
