package docker

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/docker/hostguard"
)

func TestRemoteHost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		host   string
		remote bool
	}{
		{"unix:///var/run/docker.sock", false},
		{"npipe:////./pipe/docker_engine", false},
		{"tcp://127.0.0.1:2375", false},
		{"tcp://[::1]:2376", false},
		{"tcp://localhost:2375", false},
		{"tcp://10.0.0.5:2376", true},
		{"tcp://docker.example.com:2376", true},
		{"ssh://me@build-host", true},
		{"http://192.168.1.2:2375", true},
	} {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			if got := remoteHost(tc.host); got != tc.remote {
				t.Errorf("remoteHost(%q) = %v, want %v", tc.host, got, tc.remote)
			}
		})
	}
}

func TestEngineElsewhere(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		secopt []string
		os     string
		want   string
	}{
		{"rootful engine (this host)", []string{"name=seccomp,profile=default"}, "Debian GNU/Linux 12 (bookworm)", ""},
		{"rootless", []string{"name=seccomp,profile=default", "name=rootless", "name=cgroupns"}, "Ubuntu 24.04 LTS", hostguard.ReasonRootless},
		{"rootless among other fields", []string{"name=rootless,foo=bar"}, "Fedora", hostguard.ReasonRootless},
		{"Docker Desktop", []string{"name=seccomp,profile=unconfined"}, "Docker Desktop", hostguard.ReasonDesktop},
		{"a profile merely named rootless is not rootless", []string{"name=seccomp,profile=rootless"}, "Debian", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := engineElsewhere(tc.secopt, tc.os); got != tc.want {
				t.Errorf("engineElsewhere(%v, %q) = %q, want %q", tc.secopt, tc.os, got, tc.want)
			}
		})
	}
}

func TestGuardNetwork(t *testing.T) {
	t.Parallel()
	id := "0123456789abcdef0123456789abcdef"
	ipam := []network.IPAMConfig{
		{Subnet: netip.MustParsePrefix("172.18.0.0/16"), Gateway: netip.MustParseAddr("172.18.0.1")},
		{Subnet: netip.MustParsePrefix("fd00:18::/64")},
		{}, // an entry without a subnet adds nothing
	}
	n := guardNetwork(id, nil, ipam)
	if n.Bridge != "br-0123456789ab" {
		t.Errorf("bridge %q, want br-0123456789ab (br- and 12 characters of the ID)", n.Bridge)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("172.18.0.0/16"), netip.MustParsePrefix("fd00:18::/64")}; !slices.Equal(n.Subnets, want) {
		t.Errorf("subnets %v, want %v", n.Subnets, want)
	}
	if n := guardNetwork(id, map[string]string{bridgeNameOption: "xcore0"}, ipam); n.Bridge != "xcore0" {
		t.Errorf("bridge %q, want the network's %s", n.Bridge, bridgeNameOption)
	}
}

func TestEndpointAddrs(t *testing.T) {
	t.Parallel()
	ep := &network.EndpointSettings{IPAddress: netip.MustParseAddr("::ffff:172.18.0.2"), GlobalIPv6Address: netip.MustParseAddr("fd00:18::2")}
	got := endpointAddrs(ep)
	if want := []netip.Addr{netip.MustParseAddr("172.18.0.2"), netip.MustParseAddr("fd00:18::2")}; !slices.Equal(got, want) {
		t.Errorf("endpointAddrs = %v, want %v", got, want)
	}
	if got := endpointAddrs(nil); got != nil {
		t.Errorf("endpointAddrs(nil) = %v", got)
	}
}

// TestRefusedWithoutRules: without installed rules a bridge instance with egress "none"
// or a list is refused before anything is created (the reason Protect found is in the
// error); egress "all" and network = "none" start. The plugin's latest policy wins over
// the Spec's.
func TestRefusedWithoutRules(t *testing.T) {
	t.Parallel()
	c := &Client{runnerID: "r1", log: slog.New(slog.DiscardHandler)}
	none := sandbox.Egress{Restrict: true}
	if err := c.admissible(sandbox.Spec{Plugin: "a", Network: sandbox.NetworkBridge, Egress: none}); err == nil ||
		!strings.Contains(err.Error(), `egress = none cannot be enforced: the runner's host rules are not installed`) {
		t.Errorf("before Protect: %v", err)
	}
	c.guard.tried, c.guard.why = true, "host protection unavailable: no CAP_NET_ADMIN"
	c.guard.policy = map[string]sandbox.Egress{"listed": {Restrict: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, "freed": {}}
	for _, tc := range []struct {
		spec    sandbox.Spec
		refused string
	}{
		{sandbox.Spec{Plugin: "a", Network: sandbox.NetworkBridge}, ""},
		{sandbox.Spec{Plugin: "a", Network: sandbox.NetworkBridge, Egress: none}, `plugin a: egress = none cannot be enforced: host protection unavailable: no CAP_NET_ADMIN`},
		{sandbox.Spec{Plugin: "a", Network: sandbox.NetworkNone, Egress: none}, ""},
		{sandbox.Spec{Plugin: "listed", Network: sandbox.NetworkBridge}, `egress = ["10.0.0.0/8"] cannot be enforced`},
		{sandbox.Spec{Plugin: "freed", Network: sandbox.NetworkBridge, Egress: none}, ""},
	} {
		err := c.admissible(tc.spec)
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("%s (spec egress %s): refused: %v", tc.spec.Plugin, tc.spec.Egress, err)
		case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("%s: %v, want an error saying %q", tc.spec.Plugin, err, tc.refused)
		}
	}
}
