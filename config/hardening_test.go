package config_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/xcore/runner/config"
)

// writeConfig writes src as plugins.hcl in a fresh directory and returns its path.
func writeConfig(t testing.TB, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugins.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantError asserts that src fails to load with an error at line:col (col 0: any) whose
// summary and detail contain the given strings.
func wantError(t *testing.T, src string, line, col int, summary, detail string) {
	t.Helper()
	path := writeConfig(t, src)
	cfg, files, diags := config.Load(path)
	if cfg != nil {
		t.Error("cfg != nil despite errors")
	}
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil && d.Subject.Filename == path &&
			d.Subject.Start.Line == line && (col == 0 || d.Subject.Start.Column == col) &&
			strings.Contains(d.Summary, summary) && strings.Contains(d.Detail, detail) {
			return
		}
	}
	var buf bytes.Buffer
	_ = config.WriteDiagnostics(&buf, files, diags, false)
	t.Errorf("want an error at %d:%d %q (%q), got:\n%s", line, col, summary, detail, buf.String())
}

func TestLoadTrustedProxies(t *testing.T) {
	t.Parallel()
	t.Run("default is empty", func(t *testing.T) {
		t.Parallel()
		cfg := load(t, writeConfig(t, "runner {\n  listen = \"127.0.0.1:0\"\n}\n"))
		if len(cfg.Runner.TrustedProxies) != 0 {
			t.Errorf("TrustedProxies = %v, want none", cfg.Runner.TrustedProxies)
		}
	})
	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		cfg := load(t, writeConfig(t, `runner {
  trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "0.0.0.0/0"]
}
`))
		want := []netip.Prefix{
			netip.MustParsePrefix("127.0.0.1/32"),
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
			netip.MustParsePrefix("0.0.0.0/0"),
		}
		if !reflect.DeepEqual(cfg.Runner.TrustedProxies, want) {
			t.Errorf("TrustedProxies = %v, want %v", cfg.Runner.TrustedProxies, want)
		}
	})
	for _, tc := range []struct {
		name, value string
		col         int
		detail      string
	}{
		{"not a prefix", `["127.0.0.1/32", "proxy.example"]`, 38, `"proxy.example" is not a CIDR prefix`},
		{"bare address", `["10.1.2.3"]`, 22, `use "10.1.2.3/32" for this one address`},
		{"bare v6 address", `["fd00::1"]`, 22, `use "fd00::1/128"`},
		{"host bits set", `["10.0.0.0/8", "10.1.2.3/8"]`, 36, `use "10.0.0.0/8"`},
		{"prefix too long", `["10.0.0.0/33"]`, 22, "not a CIDR prefix"},
		{"not a list", `"10.0.0.0/8"`, 21, "must be a list of strings"},
		{"zone", `["fe80::1%eth0/64"]`, 22, "not a CIDR prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantError(t, "runner {\n  trusted_proxies = "+tc.value+"\n}\n", 2, tc.col, "Invalid trusted_proxies", tc.detail)
		})
	}
}

func TestLoadMaxPlugins(t *testing.T) {
	t.Parallel()
	src := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "plugin \"p%d\" {\n  image = \"p:latest\"\n  port = 8080\n}\n", i)
		}
		return b.String()
	}
	cfg := load(t, writeConfig(t, src(config.MaxPlugins)))
	if len(cfg.Plugins) != config.MaxPlugins {
		t.Fatalf("%d plugins loaded, want %d", len(cfg.Plugins), config.MaxPlugins)
	}
	// One too many: the error points at the first plugin beyond the limit and names it.
	wantError(t, src(config.MaxPlugins+1), 4*config.MaxPlugins+1, 1, "Too many plugins",
		fmt.Sprintf("defines %d plugins; the limit is %d", config.MaxPlugins+1, config.MaxPlugins))
}

func TestLoadMaxPluginsAcrossDropIns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "plugins.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "plugins.hcl")
	if err := os.WriteFile(root, []byte("plugin \"root\" {\n  image = \"p:latest\"\n  port = 8080\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range config.MaxPlugins {
		src := fmt.Sprintf("plugin \"p%d\" {\n  image = \"p:latest\"\n  port = 8080\n}\n", i)
		if err := os.WriteFile(filepath.Join(dir, "plugins.d", fmt.Sprintf("%03d.hcl", i)), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _, diags := config.Load(root)
	if cfg != nil || !diags.HasErrors() || !strings.Contains(diags.Error(), "Too many plugins") {
		t.Fatalf("want Too many plugins, got cfg=%v diags=%v", cfg != nil, diags)
	}
}

func TestLoadPluginNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"0", true},
		{"hello-world", true},
		{"a1-b2-c3", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"Hello", false},
		{"a_b", false}, // not a DNS label
		{"-a", false},
		{"a-", false},
		{"a.b", false},
		{"a/b", false},
		{"..", false},
		{"a b", false},
		{"héllo", false},
		{"a\x00b", false},
		{"%2e%2e", false},
	} {
		t.Run(fmt.Sprintf("%q", tc.name), func(t *testing.T) {
			t.Parallel()
			quoted := strings.ReplaceAll(fmt.Sprintf("%q", tc.name), `\x00`, `\u0000`) // HCL has no \x
			src := "plugin " + quoted + " {\n  image = \"p:latest\"\n  port = 8080\n}\n"
			if tc.ok {
				if cfg := load(t, writeConfig(t, src)); cfg.Plugins[tc.name] == nil {
					t.Errorf("plugin %q missing", tc.name)
				}
				return
			}
			wantError(t, src, 1, 8, "Invalid plugin name", "DNS label")
		})
	}
	// Service names keep "_": they become env var prefixes.
	load(t, writeConfig(t, "service \"my_kv\" {\n  builtin = \"kv\"\n}\n"))
}

func TestLoadMemoryLowerBound(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		memory string
		ok     bool
	}{
		{"6MiB", true},
		{"6291456", true}, // bytes
		{"6291455", false},
		{"5MiB", false},
		{"1k", false},
		{"0", false},
		{"-1GiB", false},
	} {
		t.Run(tc.memory, func(t *testing.T) {
			t.Parallel()
			src := "plugin \"p\" {\n  image = \"p:latest\"\n  port = 8080\n  supervisor {\n    memory = \"" + tc.memory + "\"\n  }\n}\n"
			if tc.ok {
				if got := load(t, writeConfig(t, src)).Plugins["p"].Supervisor.Memory; got != 6<<20 {
					t.Errorf("memory = %d, want 6MiB", got)
				}
				return
			}
			wantError(t, src, 5, 14, "Invalid memory", "")
		})
	}
}

func TestLoadRootUser(t *testing.T) {
	t.Parallel()
	src := func(user, extra string) string {
		return "plugin \"p\" {\n  image = \"p:latest\"\n  port = 8080\n  supervisor {\n    user = \"" + user + "\"\n" + extra + "  }\n}\n"
	}
	for _, user := range []string{"0", "root", "0:0", "root:root", "0:65532", "00"} {
		t.Run(user, func(t *testing.T) {
			t.Parallel()
			wantError(t, src(user, ""), 5, 12, "Root user not allowed", "allow_root = true")
			wantError(t, src(user, "    allow_root = false\n"), 5, 12, "Root user not allowed", "")

			// Allowed with allow_root, and warned about at the value.
			cfg, warnings := loadWarnings(t, writeConfig(t, src(user, "    allow_root = true\n")))
			if s := cfg.Plugins["p"].Supervisor; s.User != user || !s.AllowRoot {
				t.Errorf("supervisor user %q allow_root %v", s.User, s.AllowRoot)
			}
			if len(warnings) != 1 || warnings[0].Summary != "Plugin runs as root" ||
				warnings[0].Subject.Start.Line != 5 || warnings[0].Subject.Start.Column != 12 {
				t.Errorf("warnings = %v, want one at 5:12", warnings)
			}
		})
	}
	for _, user := range []string{"65532:65532", "1000", "nobody", "65532:0"} {
		t.Run(user, func(t *testing.T) {
			t.Parallel()
			load(t, writeConfig(t, src(user, "")))
			load(t, writeConfig(t, src(user, "    allow_root = true\n"))) // no warning: not root
		})
	}
}

func TestLoadRuntimePassesThrough(t *testing.T) {
	t.Parallel()
	cfg := load(t, writeConfig(t, `plugin "sandboxed" {
  image = "p:latest"
  port  = 8080
  supervisor {
    runtime = "runsc"
  }
}
plugin "plain" {
  image = "p:latest"
  port  = 8080
}
`))
	if got := cfg.Plugins["sandboxed"].Supervisor.Runtime; got != "runsc" {
		t.Errorf("runtime = %q, want runsc", got)
	}
	if got := cfg.Plugins["plain"].Supervisor.Runtime; got != "" {
		t.Errorf("default runtime = %q, want \"\" (the engine's default)", got)
	}
}

func TestLoadFileFuncLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := filepath.Join(dir, "big.txt")
	if err := os.WriteFile(big, bytes.Repeat([]byte("a"), 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, detail string }{
		{"device", "/dev/zero", "not a regular file"},
		{"directory", dir, "not a regular file"},
		{"too large", big, "larger than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := "plugin \"p\" {\n  image = \"p:latest\"\n  port = 8080\n  env = { X = file(\"" + tc.path + "\") }\n}\n"
			wantError(t, src, 4, 0, "Invalid function argument", tc.detail)
		})
	}
}

func TestLoadWarnsExposedListeners(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		listen string
		warn   bool
	}{
		{"127.0.0.1:8080", false},
		{"127.0.0.2:8080", false},
		{"[::1]:8080", false},
		{"localhost:8080", false},
		{"0.0.0.0:8080", true},
		{":8080", true},
		{"[::]:8080", true},
		{"192.168.1.10:8080", true},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			t.Parallel()
			listeners := "  listen       = \"" + tc.listen + "\"\n  admin_listen = \"" + strings.Replace(tc.listen, ":8080", ":8081", 1) + "\"\n"
			// Host protection (the default) keeps plugins off every listener: no warning.
			if _, warnings := loadWarnings(t, writeConfig(t, "runner {\n"+listeners+"}\n")); len(warnings) != 0 {
				t.Errorf("warnings %v with host protection on", warnings)
			}
			_, diags := loadWarnings(t, writeConfig(t, "runner {\n"+listeners+"  protect_host = false\n}\n"))
			var warnings hcl.Diagnostics
			for _, d := range diags {
				if d.Summary != "Host protection off" {
					warnings = append(warnings, d)
				}
			}
			if !tc.warn {
				if len(warnings) != 0 {
					t.Errorf("warnings %v for a loopback listener", warnings)
				}
				return
			}
			if len(warnings) != 2 {
				t.Fatalf("warnings = %v, want one per listener", warnings)
			}
			for i, w := range warnings {
				if w.Summary != "Listener reachable from plugins" || w.Subject.Start.Line != 2+i || w.Subject.Start.Column != 18 {
					t.Errorf("warning %d = %s at %d:%d", i, w.Summary, w.Subject.Start.Line, w.Subject.Start.Column)
				}
			}
		})
	}
}
