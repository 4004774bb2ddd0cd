package runner

import (
	"errors"
	"testing"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/snapshot"
)

func TestMakePlanGolden(t *testing.T) {
	t.Parallel()
	spec := func(greeting string) snapshot.Spec {
		return snapshot.Spec{ImageRef: "hello:1", ImageID: "sha256:aaaaaaaaaaaaaaaa", Env: map[string]string{"GREETING": greeting}, Port: 8080, CPUs: 1, Memory: 256 << 20, Pids: 256, Network: "bridge", ReadOnly: true, User: "65532:65532"}
	}
	desired := func(s snapshot.Spec) Desired { return Desired{Spec: s, Hash: snapshot.Hash(s)} }
	running := func(id, plugin string, gen int, s snapshot.Spec) sandbox.Instance {
		return sandbox.Instance{ID: id, Plugin: plugin, Generation: gen, Running: true, Snapshot: snapshot.Hash(s), SpecLabel: snapshot.Encode(s)}
	}
	hi, hey := spec("hi"), spec("hey")
	exited := running("c9", "keep", 1, hi)
	exited.Running = false

	tests := []struct {
		name     string
		desired  map[string]Desired
		observed []sandbox.Instance
		want     string
		changes  bool
	}{
		{"nothing runs", map[string]Desired{"hello": desired(hi)}, nil, "+ hello: add\n", true},
		{"matches", map[string]Desired{"hello": desired(hi)}, []sandbox.Instance{running("c1", "hello", 3, hi)}, "= hello: unchanged\n", false},
		{"env changed", map[string]Desired{"hello": desired(hey)}, []sandbox.Instance{running("c1", "hello", 3, hi)}, "~ hello: replace (env GREETING changed)\n", true},
		{"unconfigured", map[string]Desired{}, []sandbox.Instance{running("c1", "old", 1, hi)}, "- old: remove (no longer configured)\n", true},
		{"stale generations", map[string]Desired{"hello": desired(hi)}, []sandbox.Instance{running("c2", "hello", 4, hi), running("c1", "hello", 3, hey)}, "= hello: unchanged; remove 1 stale container(s)\n", true},
		{"exited container is not kept", map[string]Desired{"keep": desired(hi)}, []sandbox.Instance{exited}, "+ keep: add; remove 1 stale container(s)\n", true},
		{"unresolvable", map[string]Desired{"ghost": {Err: errors.New(`image "ghost:1" not found locally`)}}, nil, "! ghost: error (image \"ghost:1\" not found locally)\n", true},
		{"sorted by name", map[string]Desired{"b": desired(hi), "a": desired(hi)}, nil, "+ a: add\n+ b: add\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := MakePlan(tt.desired, tt.observed)
			if got := p.String(); got != tt.want {
				t.Errorf("plan:\n%s\nwant:\n%s", got, tt.want)
			}
			if p.Changes() != tt.changes {
				t.Errorf("Changes() = %v, want %v", p.Changes(), tt.changes)
			}
		})
	}
}
