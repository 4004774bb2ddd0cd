package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkProxy measures the hot path: client → proxy → httptest upstream,
// over real loopback connections.
func BenchmarkProxy(b *testing.B) {
	h := newHarness(b)
	h.p.SetReady("hello", backendOf(b, upstream(b, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	h.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 1024
	url := h.srv.URL + "/plugins/hello/echo?x=1"

	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := h.client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
}

// BenchmarkProxyHandler calls ServeHTTP directly (no client-side network),
// to profile the proxy's own work.
func BenchmarkProxyHandler(b *testing.B) {
	h := newHarness(b)
	h.p.SetReady("hello", backendOf(b, upstream(b, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, "/plugins/hello/echo?x=1", nil)
			rec := httptest.NewRecorder()
			h.p.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Errorf("status %d", rec.Code)
				return
			}
		}
	})
}
