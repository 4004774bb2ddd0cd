package config_test

import (
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/xcore/runner/config"
)

// FuzzLoad feeds any bytes to config.Load as plugins.hcl: it never panics, and either
// reports errors (each naming a file position) with a nil config, or returns a config
// every value of which is within the documented limits.
//
//	go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 2m ./config/
func FuzzLoad(f *testing.F) {
	// Every fixture of the package is a seed, valid or not.
	_ = filepath.WalkDir("testdata", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".hcl") {
			if b, err := os.ReadFile(path); err == nil {
				f.Add(string(b))
			}
		}
		return nil
	})
	f.Add(`plugin "p" {
  image = "p:latest"
  port = 8080
  supervisor {
    user = "0"
    allow_root = true
    memory = "6MiB"
  }
}`)
	f.Add(`runner { trusted_proxies = ["10.0.0.0/8", "::1/128"] }`)
	f.Add(`runner { protect_host = false }`)
	f.Add(`plugin "p" {
  image = "p:latest"
  port = 8080
  supervisor {
    egress = ["10.0.0.0/8", "fd00::/8"]
  }
}`)
	f.Add(`service "q" {
  url = "http://127.0.0.1:9/"
  headers = { Authorization = "Bearer ${trimspace("x")}" }
}`)
	f.Add(`plugin "p" { image = "p" port = 1 }`)
	f.Add("plugin \"p\" {\n  image = \"\\u0000\"\n  port = 65535\n  env = { \"\" = \"x\" }\n}\n")
	f.Add(`runner { plugins_dir = "." }`)
	f.Add(`plugin "p" { image = file("plugins.hcl") }`)

	// One directory for every input (Load only reads): a TempDir per input would cost
	// more than the load itself.
	path := filepath.Join(f.TempDir(), "plugins.hcl")
	f.Fuzz(func(t *testing.T, src string) {
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _, diags := config.Load(path)
		if diags.HasErrors() {
			if cfg != nil {
				t.Fatalf("cfg != nil despite errors: %v", diags)
			}
			for _, d := range diags {
				if d.Severity == hcl.DiagError && (d.Subject == nil || d.Subject.Filename == "" || d.Subject.Start.Line < 1) {
					t.Fatalf("error without a file position: %s: %s", d.Summary, d.Detail)
				}
			}
			return
		}
		if cfg == nil {
			t.Fatalf("nil config without errors: %v", diags)
		}
		checkConfig(t, cfg)
	})
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkConfig asserts the invariants of a config that loaded without errors.
func checkConfig(t *testing.T, cfg *config.Config) {
	t.Helper()
	r := cfg.Runner
	if r.Listen == "" || r.AdminListen == "" || r.StateDir == "" || r.PluginsDir == "" || r.AdminTokenFile == "" {
		t.Fatalf("runner block with an empty setting: %+v", r)
	}
	if r.Reach != config.ReachPublished && r.Reach != config.ReachAddress {
		t.Fatalf("reach %q", r.Reach)
	}
	for _, p := range r.TrustedProxies {
		if !p.IsValid() || p.Masked() != p {
			t.Fatalf("trusted proxy %v is not a masked prefix", p)
		}
	}
	for name, s := range cfg.Services {
		if s.Name != name {
			t.Fatalf("service %q named %q", name, s.Name)
		}
		kinds := 0
		for _, set := range []bool{s.Builtin != "", s.URL != "", s.Env != nil} {
			if set {
				kinds++
			}
		}
		if kinds != 1 {
			t.Fatalf("service %q has %d kinds: %+v", name, kinds, s)
		}
		if s.Builtin != "" && s.Builtin != config.BuiltinKV {
			t.Fatalf("service %q builtin %q", name, s.Builtin)
		}
		if len(s.Headers) > 0 && s.URL == "" {
			t.Fatalf("service %q has headers without url", name)
		}
		for k, v := range s.Headers {
			if k == "" || strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("service %q header %q = %q", name, k, v)
			}
		}
	}
	if len(cfg.Plugins) > config.MaxPlugins {
		t.Fatalf("%d plugins, limit %d", len(cfg.Plugins), config.MaxPlugins)
	}
	for name, p := range cfg.Plugins {
		s := p.Supervisor
		switch {
		case p.Name != name:
			t.Fatalf("plugin %q named %q", name, p.Name)
		case !dnsLabel.MatchString(name):
			t.Fatalf("plugin name %q is not a DNS label", name)
		case (p.Image == "") == (p.Build == ""):
			t.Fatalf("plugin %q: image %q build %q, want exactly one", name, p.Image, p.Build)
		case p.Port < 1 || p.Port > 65535:
			t.Fatalf("plugin %q: port %d", name, p.Port)
		case s.Memory < 6<<20:
			t.Fatalf("plugin %q: memory %d < 6MiB", name, s.Memory)
		case !(s.CPUs > 0) || math.IsInf(s.CPUs, 0):
			t.Fatalf("plugin %q: cpus %v", name, s.CPUs)
		case s.Pids < 1:
			t.Fatalf("plugin %q: pids %d", name, s.Pids)
		case s.Network != config.NetworkBridge && s.Network != config.NetworkNone:
			t.Fatalf("plugin %q: network %q", name, s.Network)
		case s.User == "":
			t.Fatalf("plugin %q: empty user", name)
		case isRootUser(s.User) && !s.AllowRoot:
			t.Fatalf("plugin %q: root user %q without allow_root", name, s.User)
		case s.StartTimeout <= 0 || s.RequestTimeout <= 0 || s.StopTimeout <= 0 || s.DrainTimeout <= 0:
			t.Fatalf("plugin %q: a timeout ≤ 0: %+v", name, s)
		case s.MaxConcurrent < 1 || s.MaxBody < 1:
			t.Fatalf("plugin %q: max_concurrent %d max_body %d", name, s.MaxConcurrent, s.MaxBody)
		case s.MaxResponseHeader < 1<<10 || s.MaxResponseHeader > 64<<20:
			t.Fatalf("plugin %q: max_response_header %d", name, s.MaxResponseHeader)
		case s.Restart.Attempts < 1 || s.Restart.Window <= 0 || s.Restart.Backoff <= 0 || s.Restart.MaxBackoff < s.Restart.Backoff:
			t.Fatalf("plugin %q: restart %+v", name, s.Restart)
		case s.Restart.Policy != config.RestartAlways && s.Restart.Policy != config.RestartOnFailure && s.Restart.Policy != config.RestartNever:
			t.Fatalf("plugin %q: restart policy %q", name, s.Restart.Policy)
		case s.Health.Path != "" && !strings.HasPrefix(s.Health.Path, "/"):
			t.Fatalf("plugin %q: health path %q", name, s.Health.Path)
		case s.Health.Interval <= 0 || s.Health.Timeout <= 0 || s.Health.Failures < 1:
			t.Fatalf("plugin %q: health %+v", name, s.Health)
		case !s.Egress.Restrict && len(s.Egress.Allow) > 0:
			t.Fatalf("plugin %q: egress all with a list %v", name, s.Egress.Allow)
		case s.Network == config.NetworkNone && len(s.Egress.Allow) > 0:
			t.Fatalf("plugin %q: network none with egress %s", name, s.Egress)
		}
		for _, p := range s.Egress.Allow {
			if !p.IsValid() || p.Masked() != p {
				t.Fatalf("plugin %q: egress prefix %v is not a masked prefix", name, p)
			}
		}
		for k, v := range p.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) || k == "PORT" || strings.HasPrefix(k, "XCORE_") {
				t.Fatalf("plugin %q: env %q = %q", name, k, v)
			}
		}
		seen := map[string]bool{}
		for _, svc := range p.Services {
			if cfg.Services[svc] == nil || seen[svc] {
				t.Fatalf("plugin %q: service %q undefined or listed twice", name, svc)
			}
			seen[svc] = true
		}
	}
}

// isRootUser mirrors the rule of the config package: "root" or uid 0, with any group.
func isRootUser(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	n, err := strconv.ParseUint(u, 10, 32)
	return u == "root" || (err == nil && n == 0)
}
