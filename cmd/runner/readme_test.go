package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

// The README states things the code decides; a plugin team reads the README, not the
// code. Each check names what it guards against.
func TestREADMEMatchesTheCode(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)

	// The admin token follows state_dir unless admin_token_file is set.
	path := writeConfig(t, "runner {\n  state_dir = \"st\"\n}\n")
	r, _, diags := config.LoadRunner(path)
	if diags.HasErrors() || r.AdminTokenFile != filepath.Join(filepath.Dir(path), "st", "admin.token") {
		t.Fatalf("default admin token file %q (%v): update the README with the code", r.AdminTokenFile, diags)
	}
	if !strings.Contains(readme, "`<state_dir>/admin.token`") || !strings.Contains(readme, "# default: <state_dir>/admin.token") {
		t.Error("the README does not say that the admin token defaults to <state_dir>/admin.token")
	}

	// Label keys are io.xcore.*: a filter a user can paste.
	if !strings.Contains(readme, "`docker ps --filter label="+sandbox.LabelPlugin+"=") {
		t.Errorf("the README shows no `docker ps --filter label=%s=NAME`", sandbox.LabelPlugin)
	}

	// Durations in the API's JSON say their unit.
	if !strings.Contains(readme, "`took_ms`") || strings.Contains(readme, "`took`") {
		t.Error("the README's GET /v1/plugins fields do not match the API (took_ms)")
	}

	// The kv URL a plugin uses is $KV_URL{key}, with its conditions and counter.
	for _, s := range []string{"`GET ${KV_URL}{key}`", "`POST ${KV_URL}{key}?incr=N`", "`If-Match: <etag>`", "**412**", "`${KV_URL}kv/{key}`"} {
		if !strings.Contains(readme, s) {
			t.Errorf("the README's kv section lacks %s", s)
		}
	}
}
