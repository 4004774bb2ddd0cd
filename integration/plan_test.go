package integration

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runPlan runs `runner plan` on dir/plugins.hcl and returns its exit code and output.
func runPlan(t *testing.T, dir string) (int, string) {
	t.Helper()
	cmd := exec.Command(runnerBin, "plan", "-c", filepath.Join(dir, "plugins.hcl"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("runner plan: %v", err)
	return 0, ""
}

// `runner plan` depends on no runner, past or present: on a fresh state_dir a plugin
// with a services sidecar plans as an add (exit 2); after `runner up`, unchanged (0).
func TestPlanBeforeTheFirstUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	config := `service "kv" { builtin = "kv" }
` + plugin("greeter", images["hello"], "  services = [\"kv\"]\n")
	writeFile(t, filepath.Join(dir, "plugins.hcl"), hcl("", config))
	code, out := runPlan(t, dir)
	if code != 2 || !strings.Contains(out, "+ greeter: add") || strings.Contains(out, "sidecar") {
		t.Fatalf("plan before the first up: exit %d\n%s", code, out)
	}
	startRunnerIn(t, dir)
	if code, out := runPlan(t, dir); code != 0 || !strings.Contains(out, "= greeter: unchanged") {
		t.Errorf("plan while it runs: exit %d\n%s", code, out)
	}
}
