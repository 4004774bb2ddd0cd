package config_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/xcore/runner/config"
)

const swarmRunner = "runner {\n  backend = \"swarm\"\n}\n"

func TestLoadBackendSwarmErrors(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", config.MaxSwarmPluginName+1)
	for _, tc := range []struct {
		name, src       string
		line, col       int
		summary, detail string
	}{
		{"network none", swarmRunner + plugin("  network = \"none\""), 8, 13, "Network none not available with backend swarm", "needs backend \"docker\""},
		{"build", swarmRunner + "plugin \"p\" {\n  build = \"dir\"\n  port = 8080\n}\n", 5, 3, "Build not available with backend swarm", "load it on every node"},
		{"runtime", swarmRunner + plugin("  runtime = \"runsc\""), 8, 13, "Runtime not available with backend swarm", "default-runtime"},
		{"name too long", swarmRunner + "plugin \"" + long + "\" {\n  image = \"x:1\"\n  port = 8080\n}\n", 4, 8, "Plugin name too long for backend swarm", "at most 36"},
		{"bad backend", "runner {\n  backend = \"k8s\"\n}\n", 2, 13, "Invalid backend", `"docker" or "swarm"`},
		{"bad constraint", plugin("  placement {\n    constraints = [\"node.labels.tier == a\", \"tier\"]\n  }"), 6, 45, "Invalid constraint", `"tier" is not a placement constraint`},
		{"bad spread", plugin("  placement {\n    spread = \"zone\"\n  }"), 6, 14, "Invalid spread", "node.labels.zone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantError(t, tc.src, tc.line, tc.col, tc.summary, tc.detail)
		})
	}
}

func TestLoadPlacement(t *testing.T) {
	t.Parallel()
	src := plugin("  placement {\n    constraints = [\"node.labels.tier == plugins\"]\n    spread = \"node.labels.zone\"\n  }")
	want := config.Placement{Constraints: []string{"node.labels.tier == plugins"}, Spread: "node.labels.zone"}
	for _, tc := range []struct {
		name, src string
		warning   string // "" : none
	}{
		{"docker ignores it with a warning", src, "Placement ignored"},
		{"swarm", swarmRunner + src, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, warnings := loadWarnings(t, writeConfig(t, tc.src))
			if got := cfg.Plugins["p"].Supervisor.Placement; !reflect.DeepEqual(got, want) {
				t.Errorf("placement = %+v, want %+v", got, want)
			}
			if got := summaries(warnings); tc.warning == "" && len(got) > 0 || tc.warning != "" && !reflect.DeepEqual(got, []string{tc.warning}) {
				t.Errorf("warnings = %v, want %q", got, tc.warning)
			}
		})
	}
}

func TestLoadEgressWarnsUnderSwarm(t *testing.T) {
	t.Parallel()
	_, warnings := loadWarnings(t, writeConfig(t, swarmRunner+plugin("  egress = \"none\"")))
	if got := summaries(warnings); !reflect.DeepEqual(got, []string{"Egress not enforced with backend swarm"}) {
		t.Errorf("warnings = %v", got)
	}
}

// LoadBackend checks a config against a backend its runner block does not name yet:
// `runner validate --backend swarm`.
func TestLoadBackendOverride(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, plugin("  network = \"none\""))
	if cfg, _, diags := config.LoadBackend(path, config.BackendDocker); diags.HasErrors() || cfg.Runner.Backend != config.BackendDocker {
		t.Fatalf("docker: %v", diags)
	}
	cfg, _, diags := config.LoadBackend(path, config.BackendSwarm)
	if cfg != nil || !diags.HasErrors() || !strings.Contains(diags.Error(), "Network none not available with backend swarm") {
		t.Fatalf("swarm: cfg %v, diags %v", cfg != nil, diags)
	}
	cfg, _, diags = config.LoadBackend(writeConfig(t, plugin("")), config.BackendSwarm)
	if diags.HasErrors() || cfg.Runner.Backend != config.BackendSwarm {
		t.Fatalf("swarm, valid: %v", diags)
	}
}

func summaries(diags hcl.Diagnostics) []string {
	var out []string
	for _, d := range diags {
		out = append(out, d.Summary)
	}
	return out
}
