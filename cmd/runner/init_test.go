package main

import (
	"go/format"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitWritesScaffold(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "Team_Plugin")
	code, stdout, stderr := runCLI(t, "init", dir, "--module", "example.com/team/plugin")
	if code != 0 {
		t.Fatalf("init: exit %d\n%s\n%s", code, stdout, stderr)
	}
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, f := range scaffoldFiles {
		content := read(f.name)
		if !strings.Contains(stdout, f.name) {
			t.Errorf("stdout does not list %s:\n%s", f.name, stdout)
		}
		if strings.HasSuffix(f.name, ".go") {
			if formatted, err := format.Source([]byte(content)); err != nil || string(formatted) != content {
				t.Errorf("%s is not valid, gofmt'ed Go (%v):\n%s", f.name, err, content)
			}
		}
	}
	for name, want := range map[string][]string{
		"go.mod":         {"module example.com/team/plugin\n"},
		"main.go":        {`"github.com/xcore/runner/plugin"`, "plugin.Serve(", `from team-plugin\n`},
		"plugin_test.go": {`"github.com/xcore/runner/integration/xcoretest"`, "xcoretest.Run(", "testcontainers.CleanupContainer(t, ctr)", "xcoretest.RequireDocker(t)", `WithPlugin("team-plugin"`},
		"Dockerfile":     {"FROM scratch\n", "COPY bin/team-plugin /team-plugin\n", "USER 65532:65532\n"},
		"Makefile":       {"CGO_ENABLED=0", "IMAGE ?= team-plugin:dev", "\tdocker build"},
		"plugins.hcl":    {`plugin "team-plugin"`, `image = "team-plugin:dev"`, `health { path = "/healthz" }`},
	} {
		content := read(name)
		for _, w := range want {
			if !strings.Contains(content, w) {
				t.Errorf("%s lacks %q:\n%s", name, w, content)
			}
		}
	}
	for _, w := range []string{"next:", "make image", "make test", "runner up -c plugins.hcl", "go get github.com/xcore/runner@"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, stdout)
		}
	}
	// The runner accepts the config it wrote.
	if code, out, errb := runCLI(t, "validate", "-c", filepath.Join(dir, "plugins.hcl")); code != 0 {
		t.Errorf("validate plugins.hcl: exit %d\n%s%s", code, out, errb)
	}
}

// TestInitRefusesToOverwrite: one existing file stops init before it writes anything.
func TestInitRefusesToOverwrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mine := filepath.Join(dir, "Makefile")
	if err := os.WriteFile(mine, []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "init", "--name", "p", dir)
	if code != 1 || !strings.Contains(stderr, "already has Makefile") || !strings.Contains(stderr, "never overwrites") {
		t.Fatalf("init into a folder with a Makefile: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if b, _ := os.ReadFile(mine); string(b) != "mine\n" {
		t.Errorf("Makefile changed to %q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("init wrote files although it refused: %v", entries)
	}
}

func TestInitNamesAndUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string // the directory is appended
		code int
		want string // in stdout (exit 0) or stderr
	}{
		{"derived from the folder", nil, 0, "wrote plugin my-plugin-2 (module my-plugin-2)"},
		{"flags after the folder", []string{"--name", "other"}, 0, "wrote plugin other (module other)"},
		{"bad name", []string{"--name", "Bad_Name"}, 1, `plugin name "Bad_Name"`},
		{"bad module", []string{"--module", "no spaces/x y"}, 1, "--module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "My Plugin.2")
			code, stdout, stderr := runCLI(t, append([]string{"init", dir}, tc.args...)...)
			out := stdout
			if tc.code != 0 {
				out = stderr
			}
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, tc.code, tc.want, stdout, stderr)
			}
		})
	}
	if code, _, stderr := runCLI(t, "init"); code != 2 || !strings.Contains(stderr, "Usage: runner init <dir>") {
		t.Errorf("init without a folder: exit %d, %s", code, stderr)
	}
}
