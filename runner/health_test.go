package runner

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

// probeServer is a plugin stand-in that counts the connections probes open.
func probeServer(t *testing.T, h http.HandlerFunc) (endpoint sandbox.Endpoint, srv *httptest.Server, conns *atomic.Int64) {
	t.Helper()
	conns = &atomic.Int64{}
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return sandbox.TCP(strings.TrimPrefix(srv.URL, "http://")), srv, conns
}

var probeHealth = config.Health{Path: "/healthz", Timeout: time.Second}

// Probes of a plugin reuse one connection; without a kept connection each opens its own.
func TestProbeKeepsItsConnection(t *testing.T) {
	ep, _, conns := probeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Header.Get("User-Agent") != "xcore-runner-health" {
			http.Error(w, "wrong request "+r.URL.Path, 400)
		}
	})
	var kc probeConn
	defer kc.Close()
	for i := range 5 {
		if err := probe(context.Background(), &kc, ep, probeHealth); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 probes with a kept connection opened %d connections, want 1", n)
	}
	for range 3 {
		if err := probe(context.Background(), nil, ep, probeHealth); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 4 {
		t.Errorf("3 probes without a kept connection: %d connections in all, want 4", n)
	}
}

// A kept connection the plugin closed while idle, or a plugin that closes every
// connection after answering, does not fail a probe.
func TestProbeSurvivesClosedConnections(t *testing.T) {
	ep, srv, conns := probeServer(t, func(http.ResponseWriter, *http.Request) {})
	var kc probeConn
	defer kc.Close()
	if err := probe(context.Background(), &kc, ep, probeHealth); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	if err := probe(context.Background(), &kc, ep, probeHealth); err != nil {
		t.Fatalf("probe after the plugin closed the kept connection: %v", err)
	}
	srv.Config.SetKeepAlivesEnabled(false) // "Connection: close" on every answer
	for i := range 3 {
		if err := probe(context.Background(), &kc, ep, probeHealth); err != nil {
			t.Fatalf("probe %d of a plugin that closes connections: %v", i, err)
		}
	}
	if n := conns.Load(); n != 5 {
		t.Errorf("%d connections, want 5 (1, a new one after the close, then one per answer)", n)
	}
}

// What a probe accepts: 2xx/3xx on the health path; with no path through a published port,
// any answer; a plugin that accepts but never answers fails within the timeout.
func TestProbeVerdicts(t *testing.T) {
	status := atomic.Int64{}
	ep, _, _ := probeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(int(status.Load()))
	})
	var kc probeConn
	defer kc.Close()
	for _, tc := range []struct {
		status    int
		h         config.Health
		published bool
		ok        bool
	}{
		{200, probeHealth, false, true},
		{302, probeHealth, false, true},
		{500, probeHealth, false, false},
		{404, probeHealth, true, false},
		{500, config.Health{Timeout: time.Second}, true, true}, // published, no path: any answer
	} {
		status.Store(int64(tc.status))
		e := ep
		e.Proxied = tc.published
		err := probe(context.Background(), &kc, e, tc.h)
		if (err == nil) != tc.ok {
			t.Errorf("status %d, path %q, published %v: err = %v, want ok = %v", tc.status, tc.h.Path, tc.published, err, tc.ok)
		}
	}
	begin := time.Now()
	err := probe(context.Background(), &kc, ep, config.Health{Path: "/hang", Timeout: 200 * time.Millisecond})
	if took := time.Since(begin); err == nil || took > time.Second {
		t.Errorf("hanging plugin: err = %v after %s, want an error at the 200ms timeout", err, took)
	}
}
