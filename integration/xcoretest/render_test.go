package xcoretest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/testcontainers/testcontainers-go"

	"github.com/xcore/runner/config"
)

func TestRender(t *testing.T) {
	t.Parallel()
	o := options{}
	for _, opt := range []Option{
		WithService("kv", `builtin = "kv"`),
		WithPlugin("a", "img:1"),
		WithPlugin("b", `we"ird${x}`, `port = 9000`, "supervisor {\n  pids = 64\n}"),
		WithPlugin("a", "img:2", `services = ["kv"]`), // replaces the first "a"
		WithConfig(`service "s" { env = { X = "1" } }`),
	} {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	got := render(&o)
	want := `runner {
  listen           = "127.0.0.1:0"
  admin_token_file = "/state/admin.token"
  state_dir        = "/state"
}

service "kv" {
  builtin = "kv"
}

plugin "a" {
  image = "img:2"
  port  = 8080
  services = ["kv"]
}

plugin "b" {
  image = "we\"ird$${x}"
  port = 9000
  supervisor {
    pids = 64
  }
}

service "s" { env = { X = "1" } }
`
	if got != want {
		t.Errorf("render:\n%s\nwant:\n%s", got, want)
	}
	if strings.Count(got, "runner {") != 1 {
		t.Error("more than one runner block")
	}
}

// TestRenderLoads: what Run gives the runner passes the runner's own validation.
func TestRenderLoads(t *testing.T) {
	t.Parallel()
	o := options{}
	for _, opt := range []Option{
		WithService("kv", `builtin = "kv"`),
		WithPlugin("a", "img:1", `services = ["kv"]`, "supervisor {\n  health { path = \"/healthz\" }\n}"),
	} {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "plugins.hcl")
	if err := os.WriteFile(path, []byte(render(&o)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatalf("the runner rejects the rendered config: %v\n%s", diags, render(&o))
	}
	if cfg.Runner.Listen != listenAddr {
		t.Errorf("listen = %q, want %q", cfg.Runner.Listen, listenAddr)
	}
}

func TestOptionsAreCustomizers(t *testing.T) {
	t.Parallel()
	req := testcontainers.GenericContainerRequest{}
	before := fmt.Sprintf("%+v", req)
	if err := WithPlugin("a", "img").Customize(&req); err != nil || fmt.Sprintf("%+v", req) != before {
		t.Errorf("an Option changed the request (%v): Run applies it itself", err)
	}
	o := options{}
	for _, bad := range []Option{WithPlugin("", "img"), WithPlugin("a", ""), WithService("", "x"), WithStartupTimeout(0)} {
		if err := bad(&o); err == nil {
			t.Error("an invalid option was accepted")
		}
	}
}

func TestWithDockerConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	req := testcontainers.GenericContainerRequest{}
	if err := WithDockerConfig(dir).Customize(&req); err != nil {
		t.Fatal(err)
	}
	if req.Env["DOCKER_CONFIG"] != dockerConfigDir {
		t.Errorf("DOCKER_CONFIG = %q, want %q", req.Env["DOCKER_CONFIG"], dockerConfigDir)
	}
	if len(req.Files) != 1 || req.Files[0].HostFilePath != filepath.Join(dir, "config.json") ||
		req.Files[0].ContainerFilePath != dockerConfigDir+"/config.json" || req.Files[0].FileMode&0o004 == 0 {
		t.Errorf("files = %+v, want dir/config.json copied to %s, readable by the runner's user", req.Files, dockerConfigDir)
	}
	if err := WithDockerConfig(t.TempDir()).Customize(&req); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("WithDockerConfig of a folder without config.json: %v, want an error naming it", err)
	}
}
