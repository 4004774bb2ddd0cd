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
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/xcore/runner/config"
)

const mib = 1 << 20

// load calls config.Load and fails the test on any diagnostic.
func load(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, warnings := loadWarnings(t, path)
	if len(warnings) > 0 {
		t.Fatalf("Load(%s): unexpected warnings: %v", path, warnings)
	}
	return cfg
}

// loadWarnings calls config.Load, fails the test on any error and returns the warnings.
func loadWarnings(t *testing.T, path string) (*config.Config, hcl.Diagnostics) {
	t.Helper()
	cfg, files, diags := config.Load(path)
	if diags.HasErrors() {
		var buf bytes.Buffer
		_ = config.WriteDiagnostics(&buf, files, diags, false)
		t.Fatalf("Load(%s): unexpected diagnostics:\n%s", path, buf.String())
	}
	if cfg == nil {
		t.Fatalf("Load(%s): nil config without errors", path)
	}
	return cfg, diags
}

func abs(t *testing.T, path string) string {
	t.Helper()
	a, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// checkDefRange asserts a DefRange points at file:line and zeroes it for DeepEqual.
func checkDefRange(t *testing.T, what string, r *hcl.Range, file string, line int) {
	t.Helper()
	if r.Filename != file || r.Start.Line != line {
		t.Errorf("%s DefRange = %s:%d, want %s:%d", what, r.Filename, r.Start.Line, file, line)
	}
	*r = hcl.Range{}
}

func defaultSupervisor() config.Supervisor {
	return config.Supervisor{
		CPUs:              1,
		Memory:            256 * mib,
		Pids:              256,
		Network:           config.NetworkBridge,
		ReadOnly:          true,
		User:              "65532:65532",
		StartTimeout:      30 * time.Second,
		RequestTimeout:    30 * time.Second,
		StopTimeout:       10 * time.Second,
		DrainTimeout:      30 * time.Second,
		MaxConcurrent:     256,
		MaxBody:           10 * mib,
		Replicas:          1,
		MaxResponseHeader: mib,
		Restart: config.Restart{
			Policy:     config.RestartOnFailure,
			Attempts:   5,
			Window:     5 * time.Minute,
			Backoff:    250 * time.Millisecond,
			MaxBackoff: 30 * time.Second,
		},
		Health: config.Health{Interval: 5 * time.Second, Timeout: time.Second, Failures: 3},
	}
}

// TestLoadFull is not parallel: it sets an environment variable for env().
func TestLoadFull(t *testing.T) {
	t.Setenv("XCORE_TEST_BILLING_TOKEN", "s3cret")
	const root = "testdata/full/plugins.hcl"
	cfg, warnings := loadWarnings(t, root)
	dir := abs(t, "testdata/full")
	// protect_host = false and user = "0:0" with allow_root = true: allowed, each with a
	// warning at the value.
	wantWarnings := []struct {
		summary   string
		line, col int
	}{{"Host protection off", 13, 22}, {"Plugin runs as root", 45, 23}, {"Placement ignored", 73, 5}}
	if len(warnings) != len(wantWarnings) {
		t.Errorf("warnings = %v, want %v", warnings, wantWarnings)
	}
	for i, w := range wantWarnings {
		if i < len(warnings) && (warnings[i].Severity != hcl.DiagWarning || warnings[i].Summary != w.summary ||
			warnings[i].Subject == nil || warnings[i].Subject.Start.Line != w.line || warnings[i].Subject.Start.Column != w.col) {
			t.Errorf("warning %d = %v, want %q at %s:%d:%d", i, warnings[i], w.summary, root, w.line, w.col)
		}
	}

	checkDefRange(t, "service kv", &cfg.Services["kv"].DefRange, root, 18)
	checkDefRange(t, "service billing", &cfg.Services["billing"].DefRange, root, 22)
	checkDefRange(t, "service settings", &cfg.Services["settings"].DefRange, "testdata/full/drop/10-settings.hcl", 1)
	checkDefRange(t, "plugin hello", &cfg.Plugins["hello"].DefRange, root, 30)
	checkDefRange(t, "plugin builder", &cfg.Plugins["builder"].DefRange, "testdata/full/drop/20-builder.hcl", 1)

	builderSup := defaultSupervisor()
	builderSup.Egress = config.Egress{Restrict: true, Allow: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("fd00::/8"),
	}}
	want := &config.Config{
		Runner: config.Runner{
			Listen:         "127.0.0.1:9080",
			AdminListen:    "127.0.0.1:9081",
			AdminTokenFile: filepath.Join(dir, "secrets/admin.token"),
			StateDir:       filepath.Join(dir, "state"),
			PluginsDir:     filepath.Join(dir, "drop"),
			Watch:          false,
			Reach:          config.ReachAddress,
			KeepOnExit:     true,
			TrustedProxies: []netip.Prefix{
				netip.MustParsePrefix("127.0.0.1/32"),
				netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("fd00::/8"),
			},
			StartConcurrency: 3,
			ProtectHost:      false,
			Backend:          config.BackendDocker,
			RegistryPoll:     time.Minute,
		},
		Services: map[string]*config.Service{
			"kv": {Name: "kv", Builtin: "kv"},
			"billing": {
				Name: "billing",
				URL:  "https://billing.internal:9000/v1",
				Headers: map[string]string{
					"Authorization": "Bearer s3cret",
					"X-Api-Key":     "tok3n",
				},
			},
			"settings": {Name: "settings", Env: map[string]string{"FEATURE_X": "on"}},
		},
		Plugins: map[string]*config.Plugin{
			"hello": {
				Name:         "hello",
				Image:        "xcore-examples/hello:latest",
				Pull:         config.PullAlways,
				RegistryPoll: 30 * time.Second,
				Port:         8080,
				Command:      []string{"/hello", "-v"},
				Env:          map[string]string{"GREETING": "hi", "LEVEL": "3", "SECRET": "tok3n\n"},
				Services:     []string{"kv", "settings", "billing"},
				Supervisor: config.Supervisor{
					CPUs:              0.5,
					Memory:            128 * mib,
					Pids:              128,
					Network:           config.NetworkNone,
					ReadOnly:          false,
					User:              "0:0",
					AllowRoot:         true,
					Runtime:           "runsc",
					Egress:            config.Egress{Restrict: true},
					StartTimeout:      15 * time.Second,
					RequestTimeout:    20 * time.Second,
					StopTimeout:       5 * time.Second,
					DrainTimeout:      time.Minute,
					MaxConcurrent:     64,
					MaxBody:           mib,
					Replicas:          3,
					MaxResponseHeader: 64 << 10,
					Restart: config.Restart{
						Policy:     config.RestartAlways,
						Attempts:   10,
						Window:     10 * time.Minute,
						Backoff:    time.Second,
						MaxBackoff: time.Minute,
					},
					Health: config.Health{
						Path:     "/healthz",
						Interval: 2 * time.Second,
						Timeout:  500 * time.Millisecond,
						Failures: 5,
					},
					Placement: config.Placement{
						Constraints: []string{"node.labels.tier == plugins", "node.role != manager"},
						Spread:      "node.labels.zone",
					},
				},
			},
			"builder": {
				Name:       "builder",
				Build:      filepath.Join(dir, "examples/builder"),
				Pull:       config.PullNever,
				Port:       3000,
				Supervisor: builderSup,
			},
		},
		Files: []string{
			root,
			"testdata/full/drop/10-settings.hcl",
			"testdata/full/drop/20-builder.hcl",
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load(%s) mismatch\n got: %s\nwant: %s", root, dump(cfg), dump(want))
	}
}

func dump(c *config.Config) string {
	var b strings.Builder
	b.WriteString(strings.ReplaceAll(strings.TrimSpace(fmtAny(c.Runner)), "\n", " "))
	for n, s := range c.Services {
		b.WriteString("\n  service " + n + ": " + fmtAny(*s))
	}
	for n, p := range c.Plugins {
		b.WriteString("\n  plugin " + n + ": " + fmtAny(*p))
	}
	b.WriteString("\n  files: " + fmtAny(c.Files))
	return b.String()
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	const root = "testdata/defaults/plugins.hcl"
	cfg := load(t, root)
	dir := abs(t, "testdata/defaults")
	checkDefRange(t, "plugin min", &cfg.Plugins["min"].DefRange, root, 2)
	want := &config.Config{
		Runner: config.Runner{
			Listen:         "127.0.0.1:8080",
			AdminListen:    "127.0.0.1:8081",
			AdminTokenFile: filepath.Join(dir, ".runner/admin.token"),
			StateDir:       filepath.Join(dir, ".runner"),
			PluginsDir:     filepath.Join(dir, "plugins.d"),
			Watch:          true,
			Reach:          config.ReachPublished,

			StartConcurrency: 8,
			ProtectHost:      true,
			Backend:          config.BackendDocker,
			RegistryPoll:     5 * time.Minute,
		},
		Services: map[string]*config.Service{},
		Plugins: map[string]*config.Plugin{
			"min": {Name: "min", Image: "min:latest", Pull: config.PullMissing, RegistryPoll: 5 * time.Minute, Port: 8080, Supervisor: defaultSupervisor()},
		},
		Files: []string{root},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load(%s) mismatch\n got: %s\nwant: %s", root, dump(cfg), dump(want))
	}
	if got := cfg.Plugins["min"].Supervisor.Health.Path; got != "" {
		t.Errorf("Health.Path = %q, want \"\" (TCP connect probe)", got)
	}
}

func TestLoadPartialSupervisorMergesDefaults(t *testing.T) {
	t.Parallel()
	cfg := load(t, "testdata/partial/plugins.hcl")
	want := defaultSupervisor()
	want.Memory = 64 * mib
	want.Restart.Attempts = 2
	want.Health.Path = "/ready"
	if got := cfg.Plugins["partial"].Supervisor; !reflect.DeepEqual(got, want) {
		t.Errorf("Supervisor =\n %+v\nwant\n %+v", got, want)
	}
}

func TestLoadPluginsDir(t *testing.T) {
	t.Parallel()
	cfg := load(t, "testdata/dropin/plugins.hcl")
	wantFiles := []string{
		"testdata/dropin/plugins.hcl",
		"testdata/dropin/plugins.d/a.hcl",
		"testdata/dropin/plugins.d/b.hcl",
	}
	if !reflect.DeepEqual(cfg.Files, wantFiles) {
		t.Errorf("Files = %q, want %q (root first, then lexical)", cfg.Files, wantFiles)
	}
	for _, name := range []string{"root", "a", "b"} {
		if cfg.Plugins[name] == nil {
			t.Errorf("plugin %q missing", name)
		}
	}
	// The root file's plugin uses a service declared in a drop-in.
	if got := cfg.Plugins["root"].Services; !reflect.DeepEqual(got, []string{"kv", "extra"}) {
		t.Errorf("root services = %q", got)
	}
	if s := cfg.Services["extra"]; s == nil || s.DefRange.Filename != "testdata/dropin/plugins.d/a.hcl" {
		t.Errorf("service extra = %+v, want one defined in plugins.d/a.hcl", s)
	}
}

func TestLoadMissingPluginsDir(t *testing.T) {
	t.Parallel()
	// testdata/defaults has no plugins.d: that is fine.
	cfg := load(t, "testdata/defaults/plugins.hcl")
	if len(cfg.Files) != 1 {
		t.Errorf("Files = %q, want only the root file", cfg.Files)
	}
}

func TestLoadDuplicatePluginAcrossFiles(t *testing.T) {
	t.Parallel()
	cfg, _, diags := config.Load("testdata/invalid/dup_plugin/plugins.hcl")
	if cfg != nil {
		t.Fatal("cfg != nil despite errors")
	}
	if len(diags) != 1 {
		t.Fatalf("want 1 diagnostic, got %d: %v", len(diags), diags)
	}
	d := diags[0]
	if d.Subject.Filename != "testdata/invalid/dup_plugin/plugins.d/10-hello.hcl" || d.Subject.Start.Line != 3 {
		t.Errorf("subject = %s:%d, want the drop-in's definition", d.Subject.Filename, d.Subject.Start.Line)
	}
	if want := "previous definition was at testdata/invalid/dup_plugin/plugins.hcl:6"; !strings.Contains(d.Detail, want) {
		t.Errorf("detail = %q, want it to contain %q", d.Detail, want)
	}
}

// TestLoadFuncs is not parallel: it sets environment variables for env().
func TestLoadFuncs(t *testing.T) {
	t.Setenv("XCORE_TEST_FUNCS_TAG", "v1")
	t.Setenv("XCORE_TEST_FUNCS_VAR", "from-env")
	t.Setenv("XCORE_TEST_FUNCS_EMPTY", "")
	cfg := load(t, "testdata/funcs/plugins.hcl")

	f := cfg.Plugins["f"]
	if f.Image != "f:v1" {
		t.Errorf("image = %q, want env() in a template", f.Image)
	}
	wantEnv := map[string]string{
		"FROM_ENV":  "from-env",
		"EMPTY":     "",
		"FROM_FILE": "  value  \n",
		"TRIMMED":   "value",
	}
	if !reflect.DeepEqual(f.Env, wantEnv) {
		t.Errorf("env = %q, want %q", f.Env, wantEnv)
	}
	// file() in a drop-in is relative to the root file's directory.
	if got := cfg.Plugins["g"].Env["FROM_FILE"]; got != "  value  \n" {
		t.Errorf("g FROM_FILE = %q", got)
	}
}

func TestLoadMemorySizes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		memory string
		want   int64
	}{
		{"128MB", 128 * mib},
		{"128MiB", 128 * mib},
		{"128m", 128 * mib},
		{"1GiB", 1024 * mib},
		{"6MiB", 6 * mib},
	} {
		t.Run(tc.memory, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "plugins.hcl")
			src := `plugin "p" {
  image = "p:latest"
  port  = 8080
  supervisor {
    memory = "` + tc.memory + `"
  }
}
`
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := load(t, path).Plugins["p"].Supervisor.Memory; got != tc.want {
				t.Errorf("memory %q = %d, want %d", tc.memory, got, tc.want)
			}
		})
	}
}

func TestLoadInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		path    string // under testdata/invalid; a directory means <dir>/plugins.hcl
		file    string // file of the error, relative to testdata/invalid
		line    int    // 0: the config is valid
		summary string
		detail  string // optional substring of the detail
	}{
		{name: "unknown attribute", path: "unknown_attribute.hcl", line: 4, summary: "Unsupported argument"},
		{name: "unknown block", path: "unknown_block.hcl", line: 5, summary: "Unsupported block type"},
		{name: "unknown top-level block", path: "unknown_top_block.hcl", line: 6, summary: "Unsupported block type"},
		{name: "duplicate plugin across files", path: "dup_plugin", file: "dup_plugin/plugins.d/10-hello.hcl", line: 3,
			summary: `Duplicate plugin "hello"`, detail: "previous definition was at testdata/invalid/dup_plugin/plugins.hcl:6"},
		{name: "runner block in drop-in", path: "runner_in_dropin", file: "runner_in_dropin/plugins.d/extra.hcl", line: 5,
			summary: "Unexpected runner block"},
		{name: "duplicate runner block", path: "dup_runner.hcl", line: 4, summary: "Duplicate runner block", detail: "dup_runner.hcl:1"},
		{name: "memory lots", path: "memory_lots.hcl", line: 5, summary: "Invalid memory", detail: `"lots" is not a size; use e.g. "128MiB"`},
		{name: "memory 128MB accepted", path: "memory_128MB.hcl"},
		{name: "memory below docker minimum", path: "memory_too_small.hcl", line: 5, summary: "Invalid memory", detail: "at least 6MiB"},
		{name: "cpus zero", path: "cpus_zero.hcl", line: 5, summary: "Invalid cpus", detail: "greater than zero"},
		{name: "cpus negative", path: "cpus_negative.hcl", line: 5, summary: "Invalid cpus"},
		{name: "cpus not a number", path: "cpus_string.hcl", line: 5, summary: "Invalid cpus", detail: "must be a number"},
		{name: "pids zero", path: "pids_zero.hcl", line: 5, summary: "Invalid pids", detail: "use 1 or more"},
		{name: "max_body not a size", path: "max_body_bad.hcl", line: 5, summary: "Invalid max_body"},
		{name: "replicas over 64", path: "replicas_65.hcl", line: 5, summary: "Invalid replicas", detail: "got 65; use 1 to 64"},
		{name: "replicas zero", path: "replicas_0.hcl", line: 5, summary: "Invalid replicas", detail: "got 0; use 1 to 64"},
		{name: "max_response_header too small", path: "max_response_header_small.hcl", line: 5, summary: "Invalid max_response_header", detail: "use at least 1KiB"},
		{name: "max_response_header too large", path: "max_response_header_large.hcl", line: 5, summary: "Invalid max_response_header", detail: "got 1GiB; use at most 64MiB"},
		{name: "port zero", path: "port_zero.hcl", line: 3, summary: "Invalid port", detail: "use 1 to 65535"},
		{name: "port 70000", path: "port_70000.hcl", line: 3, summary: "Invalid port", detail: "got 70000"},
		{name: "missing port", path: "missing_port.hcl", line: 1, summary: "Missing port"},
		{name: "missing image", path: "missing_image.hcl", line: 3, summary: "Missing image"},
		{name: "image and build", path: "image_and_build.hcl", line: 3, summary: "Conflicting image and build"},
		{name: "unknown service reference", path: "unknown_service.hcl", line: 10, summary: "Unknown service", detail: `"billing" is not defined; use one of: kv`},
		{name: "duplicate service reference", path: "dup_service_ref.hcl", line: 8, summary: "Duplicate service reference"},
		{name: "bad duration", path: "bad_duration.hcl", line: 5, summary: "Invalid stop_timeout", detail: `"5 minutes" is not a duration`},
		{name: "zero duration", path: "zero_duration.hcl", line: 5, summary: "Invalid drain_timeout", detail: "greater than zero"},
		{name: "bad network", path: "bad_network.hcl", line: 5, summary: "Invalid network", detail: `use "bridge" or "none"`},
		{name: "egress neither all nor none", path: "egress_bad_string.hcl", line: 5, summary: "Invalid egress",
			detail: `got "some"; use "all", "none" or a list of CIDR prefixes`},
		{name: "egress CIDR not in a list", path: "egress_cidr_string.hcl", line: 5, summary: "Invalid egress",
			detail: `a CIDR prefix goes in a list: egress = ["10.0.0.0/8"]`},
		{name: "egress prefix with host bits", path: "egress_bad_cidr.hcl", line: 7, summary: "Invalid egress",
			detail: `"10.1.2.3/8" has bits set beyond its /8; use "10.0.0.0/8"`},
		{name: "egress list without a network", path: "egress_network_none.hcl", line: 6, summary: "Invalid egress",
			detail: `no effect with network = "none"`},
		{name: "protect_host not a bool", path: "bad_protect_host.hcl", line: 3, summary: "Invalid protect_host",
			detail: "must be true or false"},
		{name: "root user without allow_root", path: "root_user.hcl", line: 5, summary: "Root user not allowed", detail: "allow_root = true"},
		{name: "uid 0 without allow_root", path: "root_uid.hcl", line: 5, summary: "Root user not allowed"},
		{name: "empty user", path: "empty_user.hcl", line: 5, summary: "Invalid user"},
		{name: "bad plugin name", path: "bad_plugin_name.hcl", line: 1, summary: "Invalid plugin name"},
		{name: "bad service name", path: "bad_service_name.hcl", line: 1, summary: "Invalid service name"},
		{name: "bad reach", path: "bad_reach.hcl", line: 3, summary: "Invalid reach", detail: `use "published" or "address"`},
		{name: "bad listen", path: "bad_listen.hcl", line: 2, summary: "Invalid admin_listen", detail: "not host:port"},
		{name: "start_concurrency zero", path: "start_concurrency_zero.hcl", line: 3, summary: "Invalid start_concurrency", detail: "use 1 to 256"},
		{name: "listen equals admin_listen", path: "same_listen.hcl", line: 3, summary: "Invalid admin_listen"},
		{name: "service with two kinds", path: "service_two_kinds.hcl", line: 3, summary: "Conflicting service kinds"},
		{name: "service with no kind", path: "service_no_kind.hcl", line: 1, summary: "Missing service kind"},
		{name: "service bad builtin", path: "service_bad_builtin.hcl", line: 2, summary: "Invalid builtin", detail: `use "kv"`},
		{name: "service bad url", path: "service_bad_url.hcl", line: 2, summary: "Invalid url"},
		{name: "headers without url", path: "headers_without_url.hcl", line: 3, summary: "Unexpected headers"},
		{name: "header value with newline", path: "header_newline.hcl", line: 3, summary: "Invalid header value", detail: "trimspace"},
		{name: "duplicate service", path: "dup_service.hcl", line: 4, summary: `Duplicate service "kv"`, detail: "dup_service.hcl:1"},
		{name: "service env name collision", path: "service_env_collision.hcl", line: 4, summary: "Conflicting service name", detail: "A_B_URL"},
		{name: "health path without slash", path: "health_path.hcl", line: 6, summary: "Invalid path", detail: `must start with "/"`},
		{name: "health failures zero", path: "health_failures.hcl", line: 6, summary: "Invalid failures"},
		{name: "bad restart policy", path: "restart_policy.hcl", line: 6, summary: "Invalid policy", detail: `"always", "on-failure" or "never"`},
		{name: "max_backoff below backoff", path: "max_backoff.hcl", line: 7, summary: "Invalid max_backoff"},
		{name: "duplicate supervisor block", path: "dup_supervisor.hcl", line: 6, summary: "Duplicate supervisor block"},
		{name: "reserved env name", path: "reserved_env.hcl", line: 6, summary: "Reserved env name"},
		{name: "env() of an unset variable", path: "env_unset.hcl", line: 4, summary: "Invalid function argument", detail: "XCORE_TEST_SURELY_UNSET_VARIABLE"},
		{name: "file() of a missing file", path: "file_missing.hcl", line: 4, summary: "Invalid function argument", detail: "no-such-file.txt"},
		{name: "syntax error", path: "syntax_error.hcl", line: 3, summary: "Invalid expression"},
		{name: "image with upper case", path: "image_upper.hcl", line: 2, summary: "Invalid image", detail: `"Team/Hello:1.4" is not an image reference`},
		{name: "image with a short digest", path: "image_bad_digest.hcl", line: 2, summary: "Invalid image", detail: "not an image reference"},
		{name: "image with a URL scheme", path: "image_scheme.hcl", line: 2, summary: "Invalid image", detail: "not an image reference"},
		{name: "every image form accepted", path: "image_forms.hcl"},
		{name: "bad pull policy", path: "bad_pull.hcl", line: 3, summary: "Invalid pull", detail: `got "sometimes"; use "missing", "always" or "never"`},
		{name: "pull with build", path: "pull_with_build.hcl", line: 3, summary: "Unexpected pull", detail: "never pulled"},
		{name: "registry_poll with build", path: "registry_poll_with_build.hcl", line: 3, summary: "Unexpected registry_poll"},
		{name: "registry_poll not a duration", path: "bad_registry_poll.hcl", line: 2, summary: "Invalid registry_poll", detail: `"5 minutes" is not a duration`},
		{name: "registry_poll below a second", path: "registry_poll_small.hcl", line: 4, summary: "Invalid registry_poll", detail: `use at least "1s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join("testdata/invalid", tc.path)
			if fi, err := os.Stat(path); err == nil && fi.IsDir() {
				path = filepath.Join(path, "plugins.hcl")
			}
			cfg, files, diags := config.Load(path)
			if tc.line == 0 {
				if diags.HasErrors() || cfg == nil {
					t.Fatalf("want a valid config, got %v", diags)
				}
				return
			}
			if cfg != nil {
				t.Error("cfg != nil despite errors")
			}
			file := path
			if tc.file != "" {
				file = filepath.Join("testdata/invalid", tc.file)
			}
			for _, d := range diags {
				if d.Severity == hcl.DiagError && d.Subject != nil &&
					d.Subject.Filename == file && d.Subject.Start.Line == tc.line &&
					strings.Contains(d.Summary, tc.summary) && strings.Contains(d.Detail, tc.detail) {
					return
				}
			}
			var buf bytes.Buffer
			_ = config.WriteDiagnostics(&buf, files, diags, false)
			t.Errorf("want an error at %s:%d %q (%q), got:\n%s", file, tc.line, tc.summary, tc.detail, buf.String())
		})
	}
}

// TestLoadAccumulates checks that every error of a file is reported, not just the first.
func TestLoadAccumulates(t *testing.T) {
	t.Parallel()
	const path = "testdata/invalid/many.hcl"
	cfg, _, diags := config.Load(path)
	if cfg != nil {
		t.Error("cfg != nil despite errors")
	}
	want := []string{
		"4: Invalid port",
		"6: Invalid cpus",
		"7: Invalid memory",
		"8: Invalid network",
		"12: Invalid plugin name",
		"12: Missing image",
	}
	var got []string
	for _, d := range diags {
		got = append(got, fmtAny(d.Subject.Start.Line)+": "+d.Summary)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diagnostics =\n %q\nwant\n %q", got, want)
	}
}

func TestWriteDiagnostics(t *testing.T) {
	t.Parallel()
	_, files, diags := config.Load("testdata/invalid/memory_lots.hcl")
	var buf bytes.Buffer
	if err := config.WriteDiagnostics(&buf, files, diags, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"Error: Invalid memory",
		"on testdata/invalid/memory_lots.hcl line 5",
		`memory = "lots"`, // the source snippet
		`"lots" is not a size; use e.g. "128MiB"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestLoadMissingRootFile(t *testing.T) {
	t.Parallel()
	cfg, _, diags := config.Load("testdata/no-such-dir/plugins.hcl")
	if cfg != nil || !diags.HasErrors() {
		t.Fatalf("want an error, got cfg=%v diags=%v", cfg, diags)
	}
}

// TestLoadSyntaxErrorOnce checks that a syntax error does not cascade into value errors.
func TestLoadSyntaxErrorOnce(t *testing.T) {
	t.Parallel()
	_, _, diags := config.Load("testdata/invalid/syntax_error.hcl")
	if len(diags) != 1 {
		t.Errorf("want 1 diagnostic, got %d: %v", len(diags), diags)
	}
}

func fmtAny(v any) string { return fmt.Sprintf("%+v", v) }

// LoadRunner reads the runner block of a config whose plugin blocks do not validate
// (what ps/logs/reload need while a plugin is being edited), and reports an invalid
// runner block at its position.
func TestLoadRunnerIgnoresOtherBlocks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "plugins.hcl")
	write := func(src string) {
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`runner {
  admin_listen = "127.0.0.1:9181"
  state_dir    = "st"
}
plugin "hello" {
  image = "hello:latest"
  port  = "not a port"
  what  = 1
}`)
	if _, _, diags := config.Load(path); !diags.HasErrors() {
		t.Fatal("the whole config should not validate")
	}
	r, _, diags := config.LoadRunner(path)
	if diags.HasErrors() {
		t.Fatalf("LoadRunner: %v", diags)
	}
	if r.AdminListen != "127.0.0.1:9181" || r.Listen != "127.0.0.1:8080" || r.StateDir != filepath.Join(dir, "st") ||
		r.AdminTokenFile != filepath.Join(dir, "st", "admin.token") || r.StartConcurrency != 8 {
		t.Errorf("runner = %+v", r)
	}

	write("runner {\n  admin_listen = \"nowhere\"\n}\n")
	_, _, diags = config.LoadRunner(path)
	if !diags.HasErrors() || diags[0].Subject == nil || diags[0].Subject.Start.Line != 2 || diags[0].Summary != "Invalid admin_listen" {
		t.Errorf("diags = %v, want Invalid admin_listen at line 2", diags)
	}
}

// An unterminated string makes the parser complain on every line after it, and the
// attributes it swallowed look missing: Load reports the first error only, with how
// many it left out, and decodes no block (a reference to a block of a file that did not
// parse would fail too).
func TestLoadSyntaxErrorNoCascade(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		files map[string]string
		file  string // where the one error is
		line  int
	}{
		"unterminated string": {
			files: map[string]string{"plugins.hcl": "runner {\n  state_dir = \"st\"\n}\nservice \"kv\" {\n  builtin = \"kv\"\n}\nplugin \"greeter\" {\n  image = \"team/greeter:latest\n  port  = 8080\n  services = [\"kv\"]\n  supervisor {\n    memory = \"64MiB\"\n  }\n}\n"},
			file:  "plugins.hcl", line: 8,
		},
		"unclosed block": {
			files: map[string]string{"plugins.hcl": "plugin \"a\" {\n  image = \"x\"\n  port = 1\n\nplugin \"b\" {\n  image = \"x\"\n  port = 1\n}\n"},
			file:  "plugins.hcl", line: 1,
		},
		"in a drop-in whose service the root uses": {
			files: map[string]string{
				"plugins.hcl":        "plugin \"a\" {\n  image = \"x\"\n  port = 1\n  services = [\"kv\"]\n}\n",
				"plugins.d/kv.hcl":   "service \"kv\" {\n  builtin = \"kv\n}\n",
				"plugins.d/more.hcl": "plugin \"b\" {\n  image = \"x\"\n  port = 1\n}\n",
			},
			file: "plugins.d/kv.hcl", line: 2,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for f, src := range tt.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), []byte(src), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, _, diags := config.Load(filepath.Join(dir, "plugins.hcl"))
			if cfg != nil || len(diags) != 1 {
				t.Fatalf("cfg %v, %d diagnostics, want nil and 1:\n%v", cfg, len(diags), diags)
			}
			d := diags[0]
			if d.Subject == nil || d.Subject.Filename != filepath.Join(dir, tt.file) || d.Subject.Start.Line != tt.line {
				t.Errorf("diagnostic %v, want it at %s:%d", d, tt.file, tt.line)
			}
		})
	}
}

// The admin commands need the runner block while the rest of the file does not even
// parse: a syntax error before or after it costs nothing; one inside it is reported,
// first error only.
func TestLoadRunnerPastASyntaxError(t *testing.T) {
	t.Parallel()
	const block = "runner {\n  admin_listen = \"127.0.0.1:9181\"\n  listen = \"${\"127.0.0.1\"}:9180\"\n  state_dir = \"st\"\n}\n"
	ok := map[string]struct{ src, listen, state string }{
		"unterminated string after":    {block + "plugin \"a\" {\n  image = \"x\n  port = 1\n}\n", "127.0.0.1:9180", "st"},
		"unterminated string before":   {"service \"kv\" {\n  builtin = \"kv\n}\n" + block + "plugin \"a\" {\n  image = \"x\"\n}\n", "127.0.0.1:9180", "st"},
		"unclosed block before":        {"plugin \"a\" {\n  image = \"x\"\n  port = 1\n\n" + block, "127.0.0.1:9180", "st"},
		"bad token after":              {block + "plugin \"a\" {\n  port  = = 8080\n}\n", "127.0.0.1:9180", "st"},
		"one-line runner, error after": {"runner { admin_listen = \"127.0.0.1:9181\" }\nplugin \"a\" { image = \"x }\n", "127.0.0.1:8080", ".runner"},
	}
	for name, tt := range ok {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "plugins.hcl")
			if err := os.WriteFile(path, []byte(tt.src), 0o600); err != nil {
				t.Fatal(err)
			}
			r, _, diags := config.LoadRunner(path)
			if diags.HasErrors() {
				t.Fatalf("LoadRunner: %v", diags)
			}
			if r.AdminListen != "127.0.0.1:9181" || r.Listen != tt.listen || r.AdminTokenFile != filepath.Join(filepath.Dir(path), tt.state, "admin.token") {
				t.Errorf("runner = %+v", r)
			}
		})
	}

	bad := map[string]struct {
		src  string
		line int
	}{
		"unterminated string in it": {"runner {\n  admin_listen = \"127.0.0.1:9181\n  state_dir = \"st\"\n}\nplugin \"a\" {\n  image = \"x\"\n}\n", 2},
		"unclosed runner block":     {"runner {\n  admin_listen = \"127.0.0.1:9181\"\n", 1},
		"no runner block at all":    {"plugin \"a\" {\n  image = \"x\n}\n", 2},
	}
	for name, tt := range bad {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "plugins.hcl")
			if err := os.WriteFile(path, []byte(tt.src), 0o600); err != nil {
				t.Fatal(err)
			}
			_, files, diags := config.LoadRunner(path)
			if len(diags) != 1 || diags[0].Subject == nil || diags[0].Subject.Start.Line != tt.line {
				t.Fatalf("diags = %v, want one error at line %d", diags, tt.line)
			}
			if files[path] == nil {
				t.Error("no source for the diagnostic's snippet")
			}
		})
	}
}

// A registry_poll that cannot do anything is allowed, with a warning at its value.
func TestRegistryPollWithoutEffect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, attrs, detail string }{
		{"pinned digest", `image = "team/hello@sha256:ab12000000000000000000000000000000000000000000000000000000000000"`, "pinned by digest"},
		{"pull never", "image = \"team/hello:1.4\"\n  pull = \"never\"", `pull = "never"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "plugins.hcl")
			src := "plugin \"p\" {\n  " + tc.attrs + "\n  port = 8080\n  registry_poll = \"1m\"\n}\n"
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			_, warnings := loadWarnings(t, path)
			line := strings.Count(src[:strings.Index(src, "registry_poll")], "\n") + 1
			if len(warnings) != 1 || warnings[0].Summary != "registry_poll has no effect" || !strings.Contains(warnings[0].Detail, tc.detail) ||
				warnings[0].Subject.Start.Line != line || warnings[0].Subject.Start.Column != 19 {
				t.Errorf("warnings = %v, want one at %d:19 saying %q", warnings, line, tc.detail)
			}
		})
	}
}
