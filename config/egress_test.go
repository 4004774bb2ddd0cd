package config_test

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/xcore/runner/config"
)

// plugin is a plugin block whose supervisor block holds body.
func plugin(body string) string {
	return "plugin \"p\" {\n  image = \"p:latest\"\n  port  = 8080\n  supervisor {\n" + body + "\n  }\n}\n"
}

func TestLoadEgress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		want       config.Egress
		str        string
	}{
		{"default", `    pids = 64`, config.Egress{}, "all"},
		{"all", `    egress = "all"`, config.Egress{}, "all"},
		{"none", `    egress = "none"`, config.Egress{Restrict: true}, "none"},
		{"empty list is none", `    egress = []`, config.Egress{Restrict: true}, "none"},
		{"list", `    egress = ["10.0.0.0/8", "fd00::/8", "192.168.1.7/32"]`, config.Egress{Restrict: true, Allow: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.168.1.7/32"),
		}}, `["10.0.0.0/8", "fd00::/8", "192.168.1.7/32"]`},
		{"none without a network: the same promise", "    network = \"none\"\n    egress = \"none\"", config.Egress{Restrict: true}, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := load(t, writeConfig(t, plugin(tc.body)))
			got := cfg.Plugins["p"].Supervisor.Egress
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Egress = %#v, want %#v", got, tc.want)
			}
			if got.String() != tc.str {
				t.Errorf("Egress.String() = %s, want %s", got, tc.str)
			}
		})
	}
	for _, tc := range []struct {
		name, body string
		line, col  int
		detail     string
	}{
		{"unknown word", `    egress = "nowhere"`, 5, 14, `got "nowhere"; use "all", "none" or a list of CIDR prefixes such as ["10.0.0.0/8"]`},
		{"a bare prefix", `    egress = "10.0.0.0/8"`, 5, 14, `a CIDR prefix goes in a list: egress = ["10.0.0.0/8"]`},
		{"a number", `    egress = 8`, 5, 14, `must be "all", "none" or a list`},
		{"a map", `    egress = { a = "b" }`, 5, 14, `must be "all", "none" or a list`},
		{"null", `    egress = null`, 5, 14, "must not be null"},
		{"not a prefix, pointed at", `    egress = ["10.0.0.0/8", "intranet"]`, 5, 29, `"intranet" is not a CIDR prefix`},
		{"a bare address", `    egress = ["10.1.2.3"]`, 5, 15, `use "10.1.2.3/32" for this one address`},
		{"host bits", `    egress = ["fd00::1/8"]`, 5, 15, `use "fd00::/8"`},
		{"all without a network", "    network = \"none\"\n    egress = \"all\"", 6, 14, `egress = "all" has no effect with network = "none"`},
		{"a list without a network", "    egress = [\"10.0.0.0/8\"]\n    network = \"none\"", 5, 14, `egress = ["10.0.0.0/8"] has no effect with network = "none"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantError(t, plugin(tc.body), tc.line, tc.col, "Invalid egress", tc.detail)
		})
	}
}

func TestLoadProtectHost(t *testing.T) {
	t.Parallel()
	cfg, warnings := loadWarnings(t, writeConfig(t, "runner {\n  protect_host = true\n}\n"))
	if !cfg.Runner.ProtectHost || len(warnings) != 0 {
		t.Errorf("protect_host = true: ProtectHost %v, warnings %v; want true, none", cfg.Runner.ProtectHost, warnings)
	}
	cfg, warnings = loadWarnings(t, writeConfig(t, "runner {\n  protect_host = false\n}\n"))
	if cfg.Runner.ProtectHost {
		t.Error("protect_host = false: ProtectHost is true")
	}
	if len(warnings) != 1 || warnings[0].Severity != hcl.DiagWarning || warnings[0].Summary != "Host protection off" ||
		warnings[0].Subject == nil || warnings[0].Subject.Start.Line != 2 {
		t.Errorf("protect_host = false: warnings %v, want one \"Host protection off\" at line 2", warnings)
	}
}
