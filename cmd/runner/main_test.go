package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugins.hcl")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const okPlugin = `plugin "hello" {
  image = "hello:latest"
  port  = 8080
}
`

func TestValidateInvalidConfigs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		hcl  string
		line int    // the line the diagnostic must point at
		want string // part of the message
	}{
		{"unknown attribute", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  colour = \"red\"\n}\n", 4, "colour"},
		{"unknown block", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  sidecar {}\n}\n", 4, "sidecar"},
		{"memory not a size", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  supervisor {\n    memory = \"lots\"\n  }\n}\n", 5, "lots"},
		{"cpus zero", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  supervisor {\n    cpus = 0\n  }\n}\n", 5, "cpus"},
		{"port out of range", "plugin \"a\" {\n  image = \"x\"\n  port = 70000\n}\n", 3, "port"},
		{"missing image", "plugin \"a\" {\n  port = 8080\n}\n", 1, "image"},
		{"bad duration", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  supervisor {\n    start_timeout = \"5 minutes\"\n  }\n}\n", 5, "5 minutes"},
		{"unknown service", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  services = [\"kv\"]\n}\n", 4, "kv"},
		{"root without allow_root", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  supervisor {\n    user = \"root\"\n  }\n}\n", 5, "allow_root"},
		{"bad network", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  supervisor {\n    network = \"host\"\n  }\n}\n", 5, "host"},
		{"bad restart policy", "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  supervisor {\n    restart {\n      policy = \"sometimes\"\n    }\n  }\n}\n", 6, "sometimes"},
		{"duplicate plugin", okPlugin + "\n" + okPlugin, 6, "previous definition"},
		{"syntax error", "plugin \"a\" {\n  image = \n}\n", 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, tt.hcl)
			code, stdout, stderr := runCLI(t, "validate", "-c", path)
			if code != 1 {
				t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			loc := fmt.Sprintf("%s:%d:", path, tt.line)
			if !strings.Contains(stderr, loc) {
				t.Errorf("diagnostics do not name %s…:\n%s", loc, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("diagnostics do not mention %q:\n%s", tt.want, stderr)
			}
		})
	}
}

// An unterminated string: one error (where the string starts), not one per line after it.
func TestValidateShowsTheFirstSyntaxError(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "runner {\n  state_dir = \"st\"\n}\nplugin \"greeter\" {\n  image = \"team/greeter:latest\n  port  = 8080\n  env = { GREETING = \"hi\" }\n  supervisor {\n    memory = \"64MiB\"\n  }\n}\n")
	code, _, stderr := runCLI(t, "validate", "-c", path)
	if code != 1 || strings.Count(stderr, ": error: ") != 1 || !strings.Contains(stderr, path+":5:31: error: ") {
		t.Errorf("exit %d, want 1 and a single error at %s:5:31:\n%s", code, path, stderr)
	}
}

func TestValidateValidConfig(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, "validate", "-c", writeConfig(t, okPlugin))
	if code != 0 || !strings.Contains(stdout, "valid (1 plugins") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

// A config that fails validation must start nothing: `up` stops before it even connects
// to Docker (DOCKER_HOST points nowhere, and the error is the diagnostic, not Docker's).
func TestUpWithInvalidConfigStartsNothing(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	path := writeConfig(t, "plugin \"a\" {\n  image = \"x\"\n  port = 0\n}\n")
	code, _, stderr := runCLI(t, "up", "-c", path)
	if code != 1 || !strings.Contains(stderr, path+":3:") || strings.Contains(stderr, "docker") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), ".runner")); !os.IsNotExist(err) {
		t.Errorf("state_dir was created for an invalid config: %v", err)
	}
}

func TestHelpAndUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"up", "-h"}, {"validate", "-h"}} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 || !strings.Contains(stdout+stderr, "Usage:") {
			t.Errorf("%v: exit %d, output:\n%s%s", args, code, stdout, stderr)
		}
	}
	if code, _, stderr := runCLI(t, "frobnicate"); code != 2 || !strings.Contains(stderr, "unknown command") {
		t.Errorf("unknown command: exit %d, %s", code, stderr)
	}
	if code, stdout, _ := runCLI(t, "version"); code != 0 || !strings.HasPrefix(stdout, "runner ") {
		t.Errorf("version: exit %d, %q", code, stdout)
	}
}
