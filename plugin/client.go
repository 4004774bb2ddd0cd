package plugin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// sidecarHost is the host of every NAME_URL the runner renders: it resolves, inside a
// plugin container, to the runner's services sidecar (or means the services socket of a
// plugin with network = "none"). Only URLs on it are service endpoints.
const sidecarHost = "xcore.internal"

// ServiceURL is the URL of the endpoint of service name, as the runner gives it to a
// plugin that declares the service (services = ["name"]): the variable NAME_URL, the
// name upper-cased with "-" as "_" (service "billing-v2" → BILLING_V2_URL). It ends in a
// slash; call it with Client. The error names the variable when it is not set: the
// service is not declared, or it is an env service, which has values and no endpoint.
func ServiceURL(name string) (string, error) {
	v := envName(name)
	u := os.Getenv(v)
	if u == "" {
		return "", fmt.Errorf("service %q: %s is not set: declare the service in the plugin's block (services = [%q]); an env service has no URL, only its values", name, v, name)
	}
	return u, nil
}

// envName is the variable holding a service's URL: "billing-v2" → "BILLING_V2_URL" (the
// runner's services.EnvName).
func envName(service string) string {
	return strings.ToUpper(strings.ReplaceAll(service, "-", "_")) + "_URL"
}

// Client returns an HTTP client for the plugin's services and for anything else it
// calls. A request to one of the plugin's service endpoints (under a NAME_URL of the
// environment that points at the runner) gets the header
// "Authorization: Bearer $XCORE_TOKEN", which the runner requires; no other request
// does, whatever its host, and neither does a redirect away from the endpoint. When
// XCORE_SERVICES_SOCKET is set (network = "none") the service requests go over that unix
// socket.
//
// The client has no overall timeout, so that streams work: bound a call with its
// request's context (e.g. the incoming request's r.Context()) or set Timeout on the
// returned client, which is yours. Every client Client returns shares one pool of
// connections.
func Client() *http.Client {
	return &http.Client{Transport: sharedTransport(os.Environ())}
}

var (
	transportMu   sync.Mutex
	transportKey  string
	transportLast *tokenTransport
)

// sharedTransport is the transport of env, built once: a plugin's environment does not
// change, so every Client shares its connections (tests change it, hence the key).
func sharedTransport(env []string) *tokenTransport {
	cfg := readServiceConfig(env)
	key := cfg.key()
	transportMu.Lock()
	defer transportMu.Unlock()
	if transportLast == nil || transportKey != key {
		transportLast, transportKey = newTokenTransport(cfg, http.DefaultTransport), key
	}
	return transportLast
}

// serviceConfig is what the environment says about the plugin's services.
type serviceConfig struct {
	token     string
	socket    string     // XCORE_SERVICES_SOCKET
	endpoints []endpoint // sorted
}

// endpoint is one service's URL prefix: a request goes to it when its scheme and host
// are these and its path starts with path.
type endpoint struct {
	scheme, host, path string
}

func (c serviceConfig) key() string {
	var b strings.Builder
	b.WriteString(c.token + "\x00" + c.socket)
	for _, e := range c.endpoints {
		b.WriteString("\x00" + e.scheme + "://" + e.host + e.path)
	}
	return b.String()
}

// readServiceConfig finds the service endpoints among the *_URL variables of env: those
// the runner rendered, on its sidecar host. A plugin's own URL variables (a database, a
// webhook) are not endpoints, so the token never goes there.
func readServiceConfig(env []string) serviceConfig {
	var c serviceConfig
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "XCORE_TOKEN":
			c.token = v
		case k == "XCORE_SERVICES_SOCKET":
			c.socket = v
		case strings.HasSuffix(k, "_URL"):
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !strings.EqualFold(u.Hostname(), sidecarHost) {
				continue
			}
			p := u.EscapedPath()
			if !strings.HasSuffix(p, "/") {
				p += "/"
			}
			c.endpoints = append(c.endpoints, endpoint{scheme: u.Scheme, host: canonicalHost(u), path: p})
		}
	}
	slices.SortFunc(c.endpoints, func(a, b endpoint) int {
		return strings.Compare(a.scheme+"://"+a.host+a.path, b.scheme+"://"+b.host+b.path)
	})
	return c
}

// canonicalHost is u's host in lower case with its port, the scheme's default if none.
func canonicalHost(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// match reports whether u is under one of the endpoints.
func (c serviceConfig) match(u *url.URL) bool {
	if u == nil {
		return false
	}
	host := canonicalHost(u)
	p := u.EscapedPath()
	for _, e := range c.endpoints {
		if u.Scheme == e.scheme && host == e.host &&
			(strings.HasPrefix(p, e.path) || p == strings.TrimSuffix(e.path, "/")) {
			return true
		}
	}
	return false
}

// tokenTransport adds the token to service requests and sends them to the sidecar (over
// the socket when there is one); every other request goes out through other, untouched.
type tokenTransport struct {
	cfg      serviceConfig
	services http.RoundTripper
	other    http.RoundTripper
}

func newTokenTransport(cfg serviceConfig, other http.RoundTripper) *tokenTransport {
	t := &tokenTransport{cfg: cfg, services: other, other: other}
	if cfg.socket != "" {
		var d net.Dialer
		t.services = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", cfg.socket)
			},
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	return t
}

// RoundTrip implements http.RoundTripper.
func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.cfg.match(req.URL) {
		return t.other.RoundTrip(req)
	}
	if t.cfg.token != "" {
		req = req.Clone(req.Context()) // a RoundTripper must not change the caller's request
		req.Header.Set("Authorization", "Bearer "+t.cfg.token)
	}
	return t.services.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of both transports (http.Client's
// CloseIdleConnections calls it).
func (t *tokenTransport) CloseIdleConnections() {
	type closer interface{ CloseIdleConnections() }
	if c, ok := t.other.(closer); ok {
		c.CloseIdleConnections()
	}
	if c, ok := t.services.(closer); ok && t.services != t.other {
		c.CloseIdleConnections()
	}
}
