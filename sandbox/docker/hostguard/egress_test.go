package hostguard

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestDestinations(t *testing.T) {
	t.Parallel()
	v4, v6 := netip.MustParseAddr("172.18.0.2"), netip.MustParseAddr("fd00::2")
	for _, tc := range []struct {
		name  string
		allow []string
		addr  netip.Addr
		want  []string
	}{
		{"none", nil, v4, nil},
		{"family of the source only", []string{"10.0.0.0/8", "fd00::/8"}, v4, []string{"10.0.0.0/8"}},
		{"IPv6 source", []string{"10.0.0.0/8", "fd00::/8"}, v6, []string{"fd00::/8"}},
		{"a contained prefix adds nothing (the kernel refuses overlaps)",
			[]string{"10.1.0.0/16", "10.0.0.0/8", "10.1.2.0/24", "11.0.0.0/8"}, v4, []string{"10.0.0.0/8", "11.0.0.0/8"}},
		{"same start, wider wins", []string{"10.0.0.0/16", "10.0.0.0/8"}, v4, []string{"10.0.0.0/8"}},
		{"duplicates", []string{"192.168.1.0/24", "192.168.1.0/24"}, v4, []string{"192.168.1.0/24"}},
		{"neighbours stay apart", []string{"10.1.0.0/16", "10.2.0.0/16"}, v4, []string{"10.1.0.0/16", "10.2.0.0/16"}},
		{"host bits are masked", []string{"10.1.2.3/16"}, v4, []string{"10.1.0.0/16"}},
		{"IPv4-mapped counts as IPv4", []string{"::ffff:10.0.0.0/104"}, v4, []string{"10.0.0.0/8"}},
		{"everything", []string{"0.0.0.0/0", "10.0.0.0/8"}, v4, []string{"0.0.0.0/0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := AllowOnly(prefixes(tc.allow...)...).destinations(tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, prefixes(tc.want...)) {
				t.Errorf("destinations(%v) for %s = %v, want %v", tc.allow, tc.addr, got, tc.want)
			}
		})
	}
}

func TestEgressString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		e    Egress
		want string
	}{
		{EgressAll, "all"},
		{Egress{Allow: prefixes("10.0.0.0/8")}, "all"}, // not restricted: the list is ignored
		{EgressNone, "none"},
		{AllowOnly(prefixes("10.0.0.0/8", "fd00::/8")...), "[10.0.0.0/8, fd00::/8]"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestLastAddr(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]string{
		"10.0.0.0/8":       "10.255.255.255",
		"10.1.2.3/32":      "10.1.2.3",
		"0.0.0.0/0":        "255.255.255.255",
		"192.168.1.128/25": "192.168.1.255",
		"fd00::/8":         "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"fd00:1::/127":     "fd00:1::1",
	} {
		if got := lastAddr(netip.MustParsePrefix(p)); got != netip.MustParseAddr(want) {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestElemsFor(t *testing.T) {
	t.Parallel()
	addr := netip.MustParseAddr("172.18.0.2")
	all, err := elemsFor(addr, EgressAll)
	if err != nil || all.restrict || len(all.allow) != 0 {
		t.Errorf("elemsFor(all) = %+v, %v; want no elements", all, err)
	}
	none, err := elemsFor(addr, EgressNone)
	if err != nil || !none.restrict || len(none.allow) != 0 {
		t.Errorf("elemsFor(none) = %+v, %v; want restricted, nothing allowed", none, err)
	}
	list, err := elemsFor(addr, AllowOnly(prefixes("10.0.0.0/8")...))
	if err != nil || len(list.allow) != 1 {
		t.Fatalf("elemsFor(list) = %+v, %v", list, err)
	}
	// address . first, address . last: what `nft list set` shows as 172.18.0.2 . 10.0.0.0/8
	if got, want := fmt.Sprint(list.allow[0].Key, list.allow[0].KeyEnd), fmt.Sprint(
		[]byte{172, 18, 0, 2, 10, 0, 0, 0}, []byte{172, 18, 0, 2, 10, 255, 255, 255}); got != want {
		t.Errorf("element = %s, want %s", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := func() Config {
		return Config{
			RunnerID:    "0123456789ab",
			Network:     Network{Bridge: "br-0123456789ab", Subnets: prefixes("172.18.0.0/16", "fd00:18::/64")},
			ProtectHost: true,
			Sidecar:     []netip.AddrPort{netip.MustParseAddrPort("172.18.0.1:41000")},
			Egress:      map[netip.Addr]Egress{netip.MustParseAddr("172.18.0.2"): EgressNone},
		}
	}
	if err := good().validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no runner id", func(c *Config) { c.RunnerID = "" }, "runner id"},
		{"runner id that is not a name", func(c *Config) { c.RunnerID = "a b" }, "runner id"},
		{"no bridge", func(c *Config) { c.Network.Bridge = "" }, "bridge"},
		{"bridge name too long", func(c *Config) { c.Network.Bridge = "br-0123456789abc" }, "bridge"},
		{"sidecar without port", func(c *Config) { c.Sidecar[0] = netip.AddrPortFrom(netip.MustParseAddr("172.18.0.1"), 0) }, "sidecar"},
		{"egress off the network", func(c *Config) {
			c.Egress = map[netip.Addr]Egress{netip.MustParseAddr("10.9.0.2"): EgressNone}
		}, "not on the network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := good()
			tc.change(&c)
			if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate() = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestUnavailableError(t *testing.T) {
	t.Parallel()
	eperm := fmt.Errorf("install table inet xcore-x: %w", syscall.EPERM)
	for _, tc := range []struct {
		name string
		err  error
		want []string
	}{
		{"no privilege, host protection", unavailable(true, eperm),
			[]string{"host protection unavailable: ", "CAP_NET_ADMIN", "plugins can reach host services listening on 0.0.0.0"}},
		{"no privilege, egress only", unavailable(false, eperm),
			[]string{"egress limits unavailable: ", "CAP_NET_ADMIN", `egress = "none" or a CIDR list could reach any address`}},
		{"no nf_tables", unavailable(true, syscall.EPROTONOSUPPORT), []string{"no nf_tables netlink interface"}},
		{"rootless, from the backend", Unavailable(true, ReasonRootless),
			[]string{"host protection unavailable: Docker runs rootless", "0.0.0.0"}},
		{"remote engine", Unavailable(true, ReasonRemote), []string{"remote engine"}},
		{"Docker Desktop", Unavailable(true, ReasonDesktop), []string{"Docker Desktop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, w := range tc.want {
				if !strings.Contains(tc.err.Error(), w) {
					t.Errorf("%q does not say %q", tc.err, w)
				}
			}
		})
	}
	if err := unavailable(true, eperm); !errors.Is(err, os.ErrPermission) {
		t.Errorf("%v does not unwrap to os.ErrPermission", err)
	}
}
