package plugin

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/xcore/runner/services"
)

// seen records the Authorization header of every request a server got, by path.
type seen struct {
	mu   sync.Mutex
	auth map[string]string
}

func (s *seen) handler(extra http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.auth == nil {
			s.auth = map[string]string{}
		}
		s.auth[r.URL.Path] = r.Header.Get("Authorization")
		s.mu.Unlock()
		if extra != nil {
			extra(w, r)
		}
	})
}

func (s *seen) get(path string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.auth[path]
	return v, ok
}

const token = "secret-token"

// TestClientTokenOnlyToServices (network = "none"): Client sends service requests over
// XCORE_SERVICES_SOCKET with the token, and nothing it sends anywhere else carries the
// token: not another host, not a plugin's own *_URL, not a redirect target.
func TestClientTokenOnlyToServices(t *testing.T) {
	other := &seen{}
	otherSrv := httptest.NewServer(other.handler(nil))
	defer otherSrv.Close()

	sidecar := &seen{}
	ln, err := net.Listen("unix", filepath.Join(shortTempDir(t), "services.sock"))
	if err != nil {
		t.Fatal(err)
	}
	sideSrv := httptest.NewUnstartedServer(sidecar.handler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/services/kv/redirect" {
			http.Redirect(w, r, otherSrv.URL+"/redirected", http.StatusFound)
		}
	}))
	sideSrv.Listener = ln
	sideSrv.Start()
	defer sideSrv.Close()

	t.Setenv("XCORE_TOKEN", token)
	t.Setenv("XCORE_SERVICES_SOCKET", ln.Addr().String())
	t.Setenv("KV_URL", "http://xcore.internal/services/kv/")
	t.Setenv("WEBHOOK_URL", otherSrv.URL+"/hook/") // the plugin's own: not a service
	kv, err := ServiceURL("kv")
	if err != nil {
		t.Fatal(err)
	}

	hc := Client()
	do := func(u string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		resp.Body.Close()
		if req.Header.Get("Authorization") != "" {
			t.Errorf("Client changed the caller's request: %v", req.Header)
		}
	}
	do(kv + "kv/a")
	do(kv + "redirect")
	do(otherSrv.URL + "/services/kv/kv/a") // the endpoint's path on another host
	do(otherSrv.URL + "/hook/")

	if got, ok := sidecar.get("/services/kv/kv/a"); !ok || got != "Bearer "+token {
		t.Errorf("service request over the socket: Authorization %q (reached: %v), want the token", got, ok)
	}
	for _, p := range []string{"/redirected", "/services/kv/kv/a", "/hook/"} {
		got, ok := other.get(p)
		if !ok {
			t.Errorf("other host never got %s", p)
		}
		if got != "" {
			t.Errorf("other host got %s with Authorization %q: the token left the runner", p, got)
		}
	}
}

// TestClientBridge (network = "bridge"): the token goes to the sidecar's host:port under
// the service prefix only, even on the sidecar host.
func TestClientBridge(t *testing.T) {
	t.Parallel()
	sidecar := &seen{}
	srv := httptest.NewServer(sidecar.handler(nil))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	env := []string{
		"XCORE_TOKEN=" + token,
		"KV_URL=http://xcore.internal:" + port + "/p/notes/services/kv/",
	}
	// xcore.internal is the runner's ExtraHosts entry inside a container: here, srv.
	var d net.Dialer
	dial := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h, p, _ := net.SplitHostPort(addr); h == "xcore.internal" {
			addr = net.JoinHostPort("127.0.0.1", p)
		}
		return d.DialContext(ctx, network, addr)
	}}
	hc := &http.Client{Transport: newTokenTransport(readServiceConfig(env), dial)}
	for _, p := range []string{"/p/notes/services/kv/kv/a", "/p/other/services/kv/kv/a", "/p/notes/services/kvx"} {
		resp, err := hc.Get("http://xcore.internal:" + port + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got, _ := sidecar.get("/p/notes/services/kv/kv/a"); got != "Bearer "+token {
		t.Errorf("service request: Authorization %q, want the token", got)
	}
	for _, p := range []string{"/p/other/services/kv/kv/a", "/p/notes/services/kvx"} {
		if got, ok := sidecar.get(p); !ok || got != "" {
			t.Errorf("%s (outside the service prefix): Authorization %q, reached %v; want no token", p, got, ok)
		}
	}
}

func TestServiceConfigMatch(t *testing.T) {
	t.Parallel()
	cfg := readServiceConfig([]string{
		"KV_URL=http://xcore.internal:4000/p/notes/services/kv/",
		"QUOTES_URL=http://XCORE.internal:4000/p/notes/services/quotes", // no trailing slash
		"DB_URL=http://db.example:4000/p/notes/services/db/",            // not the runner's
		"BAD_URL=://",
		"XCORE_TOKEN=t",
	})
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"http://xcore.internal:4000/p/notes/services/kv/", true},
		{"http://xcore.internal:4000/p/notes/services/kv", true},
		{"http://xcore.internal:4000/p/notes/services/kv/kv/a?x=1", true},
		{"http://xcore.internal:4000/p/notes/services/quotes/today", true},
		{"http://Xcore.Internal:4000/p/notes/services/kv/x", true},
		{"http://xcore.internal:4000/p/notes/services/kvx", false},
		{"http://xcore.internal:4001/p/notes/services/kv/", false},
		{"https://xcore.internal:4000/p/notes/services/kv/", false},
		{"http://xcore.internal/p/notes/services/kv/", false},
		{"http://xcore.internal.evil.test:4000/p/notes/services/kv/", false},
		{"http://xcore.internal:4000@evil.test/p/notes/services/kv/", false},
		{"http://evil.test/?u=http://xcore.internal:4000/p/notes/services/kv/", false},
		{"http://db.example:4000/p/notes/services/db/", false},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.match(u); got != tc.want {
			t.Errorf("match(%s) = %v, want %v", tc.url, got, tc.want)
		}
	}
}

func TestServiceURL(t *testing.T) {
	t.Setenv("BILLING_V2_URL", "http://xcore.internal:1/p/a/services/billing-v2/")
	if got, err := ServiceURL("billing-v2"); err != nil || got != "http://xcore.internal:1/p/a/services/billing-v2/" {
		t.Errorf("ServiceURL(billing-v2) = %q, %v", got, err)
	}
	_, err := ServiceURL("kv")
	if err == nil || !strings.Contains(err.Error(), "KV_URL") || !strings.Contains(err.Error(), `services = ["kv"]`) {
		t.Errorf("ServiceURL(kv) without KV_URL: %v, want an error naming KV_URL and how to declare it", err)
	}
}

// TestEnvNameMatchesRunner: the kit finds a service under the variable the runner sets.
func TestEnvNameMatchesRunner(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"kv", "billing-v2", "a_b", "x-y-z9"} {
		if got, want := envName(name), services.EnvName(name); got != want {
			t.Errorf("envName(%q) = %q, the runner sets %q", name, got, want)
		}
	}
}

// TestClientSharesTransport: clients of one environment share one connection pool.
func TestClientSharesTransport(t *testing.T) {
	t.Setenv("XCORE_TOKEN", "a")
	if Client().Transport != Client().Transport {
		t.Error("two Clients of the same environment have different transports")
	}
}
