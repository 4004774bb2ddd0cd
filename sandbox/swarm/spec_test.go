package swarm

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/api/types/swarm"

	"github.com/xcore/runner/sandbox"
)

func testSpec() sandbox.Spec {
	return sandbox.Spec{
		Plugin: "hello", Generation: 3, Image: "xcore-examples/hello:latest", ImageID: "sha256:abc",
		Snapshot: "snap", SpecLabel: "{}", Command: []string{"/hello", "-v"},
		Env: map[string]string{"PORT": "8080", "B": "2", "A": "1"}, Port: 8080,
		CPUs: 0.5, Memory: 48 << 20, Pids: 32, Network: sandbox.NetworkBridge, ReadOnly: true,
		User: "65532:65532", StopTimeout: 5 * time.Second,
		Placement: sandbox.Placement{Constraints: []string{"node.labels.tier == plugins"}, Spread: "node.labels.zone"},
		Restart:   sandbox.Restart{Policy: "on-failure", Attempts: 5, Window: 5 * time.Minute, Delay: 250 * time.Millisecond},
	}
}

// Every limit and hardening field a service carries, for each engine generation: what
// API 1.41 (Engine 20.10) takes, and the fields that only later APIs carry.
func TestServiceSpec(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		api        string
		noNewPrivs bool
		noSwap     bool
	}{
		{"1.41", false, false},
		{"1.43", false, false},
		{"1.44", true, false},
		{"1.51", true, false},
		{"1.52", true, true},
	} {
		t.Run(tc.api, func(t *testing.T) {
			t.Parallel()
			got := serviceSpec(testSpec(), "r1", "netid", 3, tc.api)
			if got.Name != "xcore-hello-3-r1" {
				t.Errorf("name = %q", got.Name)
			}
			if n := got.Mode.Replicated; n == nil || n.Replicas == nil || *n.Replicas != 3 {
				t.Errorf("replicas = %+v, want 3", got.Mode)
			}
			if e := got.EndpointSpec; e == nil || e.Mode != swarm.ResolutionModeDNSRR || len(e.Ports) != 0 {
				t.Errorf("endpoint = %+v, want dnsrr and nothing published", e)
			}
			tt := got.TaskTemplate
			cs := tt.ContainerSpec
			if cs.Image != "sha256:abc" {
				t.Errorf("image = %q, want the resolved ID (no registry lookup, the same image on every node)", cs.Image)
			}
			if !slices.Equal(cs.Command, []string{"/hello"}) || !slices.Equal(cs.Args, []string{"-v"}) {
				t.Errorf("command %q args %q", cs.Command, cs.Args)
			}
			if !slices.Equal(cs.Env, []string{"A=1", "B=2", "PORT=8080"}) {
				t.Errorf("env = %q, want sorted", cs.Env)
			}
			if cs.User != "65532:65532" || !cs.ReadOnly || cs.Init == nil || !*cs.Init || !slices.Equal(cs.CapabilityDrop, []string{"ALL"}) {
				t.Errorf("user %q read-only %v init %v cap_drop %q", cs.User, cs.ReadOnly, cs.Init, cs.CapabilityDrop)
			}
			if want := []mount.Mount{{Type: mount.TypeTmpfs, Target: "/tmp", TmpfsOptions: &mount.TmpfsOptions{SizeBytes: tmpfsSize, Mode: 0o1777}}}; !reflect.DeepEqual(cs.Mounts, want) {
				t.Errorf("mounts = %+v, want a tmpfs /tmp", cs.Mounts)
			}
			if cs.StopGracePeriod == nil || *cs.StopGracePeriod != 5*time.Second {
				t.Errorf("stop grace = %v", cs.StopGracePeriod)
			}
			if got := cs.Privileges != nil && cs.Privileges.NoNewPrivileges; got != tc.noNewPrivs {
				t.Errorf("no-new-privileges = %v, want %v (Privileges.NoNewPrivileges is API 1.44)", got, tc.noNewPrivs)
			}
			if l := tt.Resources.Limits; l == nil || l.NanoCPUs != 5e8 || l.MemoryBytes != 48<<20 || l.Pids != 32 {
				t.Errorf("limits = %+v", l)
			}
			if got := tt.Resources.SwapBytes != nil && *tt.Resources.SwapBytes == 0; got != tc.noSwap {
				t.Errorf("no swap = %v, want %v (SwapBytes is API 1.52)", got, tc.noSwap)
			}
			if !reflect.DeepEqual(tt.Networks, []swarm.NetworkAttachmentConfig{{Target: "netid"}}) {
				t.Errorf("networks = %+v", tt.Networks)
			}
			want := swarm.Placement{
				Constraints: []string{"node.labels.tier == plugins"},
				Preferences: []swarm.PlacementPreference{{Spread: &swarm.SpreadOver{SpreadDescriptor: "node.labels.zone"}}},
			}
			if tt.Placement == nil || !reflect.DeepEqual(*tt.Placement, want) {
				t.Errorf("placement = %+v", tt.Placement)
			}
			for _, l := range []map[string]string{got.Labels, cs.Labels} {
				if l[sandbox.LabelRunner] != "r1" || l[sandbox.LabelPlugin] != "hello" || l[sandbox.LabelGeneration] != "3" ||
					l[sandbox.LabelSnapshot] != "snap" || l[sandbox.LabelSpec] != "{}" || l[sandbox.LabelImage] != "sha256:abc" || l[LabelPort] != "8080" {
					t.Errorf("labels = %v", l)
				}
			}
			if d := tt.LogDriver; d == nil || d.Name != "json-file" || d.Options["max-size"] == "" {
				t.Errorf("log driver = %+v, want rotated json-file", d)
			}
		})
	}
}

func TestServiceSpecNoPlacementWritable(t *testing.T) {
	t.Parallel()
	s := testSpec()
	s.Placement, s.ReadOnly, s.Command = sandbox.Placement{}, false, nil
	got := serviceSpec(s, "r1", "n", 1, "1.41").TaskTemplate
	if got.Placement != nil || len(got.ContainerSpec.Mounts) != 0 || got.ContainerSpec.Command != nil {
		t.Errorf("placement %+v mounts %+v command %q", got.Placement, got.ContainerSpec.Mounts, got.ContainerSpec.Command)
	}
}

func TestRestartPolicy(t *testing.T) {
	t.Parallel()
	u := func(n uint64) *uint64 { return &n }
	d := func(d time.Duration) *time.Duration { return &d }
	for _, tc := range []struct {
		name string
		in   sandbox.Restart
		want swarm.RestartPolicy
	}{
		{"on-failure", sandbox.Restart{Policy: "on-failure", Attempts: 5, Window: time.Minute, Delay: time.Second},
			swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionOnFailure, MaxAttempts: u(4), Window: d(time.Minute), Delay: d(time.Second)}},
		{"always", sandbox.Restart{Policy: "always", Attempts: 3},
			swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny, MaxAttempts: u(2)}},
		{"never", sandbox.Restart{Policy: "never", Attempts: 3, Delay: time.Second},
			swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone}},
		// One attempt is the first start: no restart at all (Swarm reads 0 as unlimited).
		{"one attempt", sandbox.Restart{Policy: "on-failure", Attempts: 1},
			swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := restartPolicy(tc.in); !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("restartPolicy(%+v) = %+v, want %+v", tc.in, *got, tc.want)
			}
		})
	}
}

func TestGaps(t *testing.T) {
	t.Parallel()
	settings := func(gs []Gap) []string {
		var out []string
		for _, g := range gs {
			out = append(out, g.Setting)
		}
		return out
	}
	for api, want := range map[string][]string{
		"1.41": {"no-new-privileges", "no swap (memory_swap = memory)"},
		"1.44": {"no swap (memory_swap = memory)"},
		"1.52": nil,
		"":     {"no-new-privileges", "no swap (memory_swap = memory)"},
	} {
		if got := settings(Gaps(api)); !slices.Equal(got, want) {
			t.Errorf("Gaps(%q) = %q, want %q", api, got, want)
		}
	}
}

// A pinned registry image is what the nodes pull, with the runner's credentials in the
// create (X-Registry-Auth form, never in the spec); anything else runs by the manager's
// image ID and carries no credentials.
func TestRegistryImageForNodes(t *testing.T) {
	t.Parallel()
	local := testSpec()
	opts, err := createOptions(local, serviceSpec(local, "r1", "net", 1, "1.41"))
	if err != nil || opts.Spec.TaskTemplate.ContainerSpec.Image != "sha256:abc" || opts.EncodedRegistryAuth != "" || opts.QueryRegistry {
		t.Fatalf("local image: image %q, auth %q, query %v, %v; want the ID, no auth, no query",
			opts.Spec.TaskTemplate.ContainerSpec.Image, opts.EncodedRegistryAuth, opts.QueryRegistry, err)
	}

	const pinned = "127.0.0.1:5000/team/hello@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	reg := testSpec()
	reg.ImagePinned = pinned
	reg.RegistryAuth = &sandbox.RegistryAuth{Username: "team", Password: "s3cret-Pa55word", ServerAddress: "127.0.0.1:5000"}
	svc := serviceSpec(reg, "r1", "net", 1, "1.41")
	opts, err = createOptions(reg, svc)
	if err != nil || opts.Spec.TaskTemplate.ContainerSpec.Image != pinned || opts.QueryRegistry {
		t.Fatalf("registry image: image %q, query %v, %v; want %s, no query", opts.Spec.TaskTemplate.ContainerSpec.Image, opts.QueryRegistry, err, pinned)
	}
	raw, err := base64.URLEncoding.DecodeString(opts.EncodedRegistryAuth)
	if err != nil {
		t.Fatalf("X-Registry-Auth %q: %v", opts.EncodedRegistryAuth, err)
	}
	var got registry.AuthConfig
	if err := json.Unmarshal(raw, &got); err != nil || got.Username != "team" || got.Password != "s3cret-Pa55word" || got.ServerAddress != "127.0.0.1:5000" {
		t.Errorf("credentials sent: %+v, %v", got, err)
	}
	if b, _ := json.Marshal(svc); strings.Contains(string(b), "s3cret") {
		t.Errorf("the service spec (visible to `docker service inspect`) carries the password")
	}

	// Anonymous: a pinned image with no credentials sends none.
	reg.RegistryAuth = nil
	if opts, err := createOptions(reg, svc); err != nil || opts.EncodedRegistryAuth != "" {
		t.Errorf("anonymous: auth %q, %v", opts.EncodedRegistryAuth, err)
	}
}
