package main

import (
	"strings"
	"testing"
)

// validate --backend swarm checks the config against the cluster backend before the
// runner block says so, and lists the hardening fields a cluster's engine version decides.
func TestValidateBackendSwarm(t *testing.T) {
	t.Parallel()
	none := writeConfig(t, "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  supervisor {\n    network = \"none\"\n  }\n}\n")
	if code, _, _ := runCLI(t, "validate", "-c", none); code != 0 {
		t.Fatalf("docker backend: exit %d, want 0", code)
	}
	code, _, stderr := runCLI(t, "validate", "--backend", "swarm", "-c", none)
	if code != 1 || !strings.Contains(stderr, ":5:15: error: Network none not available with backend swarm") {
		t.Fatalf("swarm: exit %d\n%s", code, stderr)
	}

	ok := writeConfig(t, okPlugin)
	code, stdout, stderr := runCLI(t, "validate", "--backend", "swarm", "-c", ok)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"valid (1 plugins", "no-new-privileges: needs Engine API ≥ 1.44", "no swap (memory_swap = memory): needs Engine API ≥ 1.52", "egress: not enforced", "protect_host: not enforced"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("validate --backend swarm does not say %q:\n%s", want, stdout)
		}
	}
	if _, stdout, _ := runCLI(t, "validate", "-c", ok); strings.Contains(stdout, "no-new-privileges") {
		t.Errorf("the docker backend lists swarm gaps:\n%s", stdout)
	}
	if code, _, stderr := runCLI(t, "validate", "--backend", "k8s", "-c", ok); code != 1 || !strings.Contains(stderr, "Invalid backend") {
		t.Errorf("unknown backend: exit %d\n%s", code, stderr)
	}
}
