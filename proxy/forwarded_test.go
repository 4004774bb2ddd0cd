package proxy

// X-Forwarded-* handling and runner { trusted_proxies }.

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	// The harness's clients connect from 127.0.0.1.
	tests := []struct {
		name    string
		trusted []string
		sent    http.Header
		want    map[string]string // "" = absent
	}{
		{
			name: "untrusted by default: replaced",
			sent: http.Header{
				"X-Forwarded-For":    {"6.6.6.6"},
				"X-Forwarded-Proto":  {"https"},
				"X-Forwarded-Host":   {"evil.example"},
				"X-Forwarded-Prefix": {"/evil"},
				"X-Forwarded-Port":   {"443"},
				"X-Real-Ip":          {"6.6.6.6"},
				"Forwarded":          {"for=6.6.6.6;proto=https"},
			},
			want: map[string]string{
				"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "HOST",
				"X-Forwarded-Prefix": "/plugins/hello", "X-Forwarded-Port": "", "X-Real-Ip": "", "Forwarded": "",
			},
		},
		{
			name:    "peer outside the trusted networks: replaced",
			trusted: []string{"10.0.0.0/8", "::1/128"},
			sent:    http.Header{"X-Forwarded-For": {"6.6.6.6"}, "X-Forwarded-Proto": {"https"}},
			want:    map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http"},
		},
		{
			name:    "trusted peer: chain kept, peer appended",
			trusted: []string{"127.0.0.1/32", "10.0.0.0/8"},
			sent: http.Header{
				"X-Forwarded-For":   {"203.0.113.7, 10.1.2.3", "10.4.5.6"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host":  {"app.example.com:8443"},
				"X-Forwarded-Port":  {"8443"},
				"Forwarded":         {"for=6.6.6.6"},
			},
			want: map[string]string{
				"X-Forwarded-For":   "203.0.113.7, 10.1.2.3, 10.4.5.6, 127.0.0.1",
				"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com:8443",
				"X-Forwarded-Port": "8443", "X-Forwarded-Prefix": "/plugins/hello", "Forwarded": "",
			},
		},
		{
			name:    "trusted peer without a chain",
			trusted: []string{"127.0.0.0/8"},
			want:    map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "HOST"},
		},
		{
			name:    "trusted peer, malformed proto and host: ours",
			trusted: []string{"127.0.0.1/32"},
			sent:    http.Header{"X-Forwarded-Proto": {"javascript"}, "X-Forwarded-Host": {"a b/<script>"}},
			want:    map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "HOST"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var trusted []netip.Prefix
			for _, s := range tt.trusted {
				trusted = append(trusted, netip.MustParsePrefix(s))
			}
			p := New(Options{Logger: slog.New(slog.DiscardHandler), TrustedProxies: trusted})
			srv := httptest.NewServer(p)
			t.Cleanup(srv.Close)
			p.SetReady("hello", backendOf(t, upstream(t, echo)))
			h := &harness{p: p, srv: srv, client: srv.Client()}
			s := decodeSeen(t, h.do(t, http.MethodGet, "/plugins/hello/", nil, tt.sent))
			for k, v := range tt.want {
				if v == "HOST" {
					v = strings.TrimPrefix(srv.URL, "http://")
				}
				if got := strings.Join(s.Header[k], ","); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// SetTrustedProxies applies to the next request, on a backend set before it.
func TestSetTrustedProxiesAppliesLive(t *testing.T) {
	t.Parallel()
	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	p.SetReady("hello", backendOf(t, upstream(t, echo)))
	h := &harness{p: p, srv: srv, client: srv.Client()}
	sent := http.Header{"X-Forwarded-For": {"203.0.113.7"}}
	xff := func() string {
		return strings.Join(decodeSeen(t, h.do(t, http.MethodGet, "/plugins/hello/", nil, sent)).Header["X-Forwarded-For"], ",")
	}
	if got := xff(); got != "127.0.0.1" {
		t.Errorf("nothing trusted: X-Forwarded-For = %q, want the peer only", got)
	}
	p.SetTrustedProxies([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	if got := xff(); got != "203.0.113.7, 127.0.0.1" {
		t.Errorf("127.0.0.1 trusted: X-Forwarded-For = %q, want the chain kept", got)
	}
	p.SetTrustedProxies(nil)
	if got := xff(); got != "127.0.0.1" {
		t.Errorf("trust withdrawn: X-Forwarded-For = %q, want the peer only", got)
	}
}

func TestIsTrusted(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for addr, want := range map[string]bool{
		"10.1.2.3:5":          true,
		"[::ffff:10.1.2.3]:5": true, // v4-mapped
		"[fd00::1]:5":         true,
		"11.0.0.1:5":          false,
		"[fe80::1%eth0]:5":    false,
		"10.1.2.3":            false, // no port: not what net/http sets
		"":                    false,
		"@":                   false, // unix socket peer
	} {
		if got := isTrusted(addr, trusted); got != want {
			t.Errorf("isTrusted(%q) = %v, want %v", addr, got, want)
		}
	}
	if isTrusted("10.1.2.3:5", nil) {
		t.Error("trusted with an empty list")
	}
}
