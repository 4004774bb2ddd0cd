package services

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The sidecar hop cost: BenchmarkKVGet is a plugin's GET of a kv key through Handler
// (token check, ACL, bbolt read) over a keep-alive HTTP connection; BenchmarkLocalMapGet
// does the same round trip to an httptest handler whose work is a map lookup under a
// lock. Their ratio is what the sidecar adds on top of an HTTP call; BenchmarkMapGet, the
// in-process lookup a plugin would otherwise make, sets the floor.

const benchValue = "a small value, like a note's title or a counter"

func benchGet(b *testing.B, c *http.Client, url, token string) {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for b.Loop() {
		res, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || n != int64(len(benchValue)) {
			b.Fatalf("status %d, %d bytes", res.StatusCode, n)
		}
	}
}

func keepAliveClient(b *testing.B) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func BenchmarkKVGet(b *testing.B) {
	f := newFixture(b, "", defaultLimits)
	// Production logs at info: the per-request debug line costs only its Enabled check.
	f.m.log = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	kvConfig(f.m)
	kv := f.kv(b, "a")
	kv.put("bench", benchValue)
	benchGet(b, keepAliveClient(b), kv.base+"/kv/bench", kv.token)
}

func BenchmarkLocalMapGet(b *testing.B) {
	var mu sync.RWMutex
	store := map[string][]byte{"bench": []byte(benchValue)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, _ := strings.CutPrefix(r.URL.Path, "/kv/")
		mu.RLock()
		v, ok := store[key]
		mu.RUnlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(v)
	}))
	b.Cleanup(srv.Close)
	benchGet(b, keepAliveClient(b), srv.URL+"/kv/bench", "")
}

func BenchmarkMapGet(b *testing.B) {
	var mu sync.RWMutex
	store := map[string][]byte{"bench": []byte(benchValue)}
	var n int
	for b.Loop() {
		mu.RLock()
		n += len(store["bench"])
		mu.RUnlock()
	}
	if n == 0 {
		b.Fatal("no value")
	}
}
