package services

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// kvClient talks to one plugin's kv service at base, its $KV_URL without the trailing
// slash (…/services/<name>), with the documented URLs: base/{key} and base/?prefix=.
type kvClient struct {
	t     testing.TB
	c     *http.Client
	base  string
	token string
}

// do sends method to the key's URL with header name/value pairs.
func (k kvClient) do(method, key string, body io.Reader, header ...string) (*http.Response, []byte) {
	k.t.Helper()
	req, err := http.NewRequest(method, k.base+"/"+key, body)
	if err != nil {
		k.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	c := k.c
	if c == nil {
		c = http.DefaultClient
	}
	res, err := c.Do(req)
	if err != nil {
		k.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		k.t.Fatal(err)
	}
	return res, b
}

func (k kvClient) put(key, val string) {
	k.t.Helper()
	res, body := k.do("PUT", key, strings.NewReader(val))
	wantStatus(k.t, res, body, http.StatusNoContent)
}

// get returns the value, or ok false on 404.
func (k kvClient) get(key string) (val string, ok bool) {
	k.t.Helper()
	res, body := k.do("GET", key, nil)
	if res.StatusCode == http.StatusNotFound {
		wantProblem(k.t, res, body, http.StatusNotFound)
		return "", false
	}
	wantStatus(k.t, res, body, http.StatusOK)
	if ct := res.Header.Get("Content-Type"); ct != "application/octet-stream" {
		k.t.Errorf("GET %s: Content-Type %q", key, ct)
	}
	return string(body), true
}

func (k kvClient) del(key string) {
	k.t.Helper()
	res, body := k.do("DELETE", key, nil)
	wantStatus(k.t, res, body, http.StatusNoContent)
}

func (k kvClient) list(prefix string) kvListing {
	k.t.Helper()
	res, body := k.do("GET", "?prefix="+prefix, nil)
	wantStatus(k.t, res, body, http.StatusOK)
	var l kvListing
	if err := json.Unmarshal(body, &l); err != nil {
		k.t.Fatalf("decode %s: %v", body, err)
	}
	if l.Keys == nil {
		k.t.Errorf("listing %s: keys is null, want a list", body)
	}
	return l
}

func (f *fixture) kv(t testing.TB, plugin string) kvClient {
	f.m.Allow(plugin, 1)
	return kvClient{t: t, base: f.srv.URL + "/p/" + plugin + "/services/kv", token: f.m.Token(plugin, 1)}
}

func TestKVCRUD(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")

	if _, ok := kv.get("missing"); ok {
		t.Error("GET of a missing key: found")
	}
	kv.put("notes/1", "first")
	kv.put("notes/2", "second")
	kv.put("notes:x", "colon")
	kv.put("other", "")
	kv.put("notes/1", "first, edited") // overwrite

	if v, ok := kv.get("notes/1"); !ok || v != "first, edited" {
		t.Errorf("GET notes/1 = %q, %v", v, ok)
	}
	if v, ok := kv.get("other"); !ok || v != "" {
		t.Errorf("GET of an empty value = %q, %v; want found and empty", v, ok)
	}
	if got := kv.list("notes/").Keys; !slices.Equal(got, []string{"notes/1", "notes/2"}) {
		t.Errorf("list notes/ = %q", got)
	}
	if got := kv.list("").Keys; !slices.Equal(got, []string{"notes/1", "notes/2", "notes:x", "other"}) {
		t.Errorf("list all = %q", got)
	}
	if got := kv.list("zzz").Keys; len(got) != 0 {
		t.Errorf("list zzz = %q", got)
	}

	kv.del("notes/1")
	kv.del("notes/1")     // idempotent
	kv.del("never-there") // too
	if _, ok := kv.get("notes/1"); ok {
		t.Error("GET after DELETE: found")
	}
	if got := kv.list("notes").Keys; !slices.Equal(got, []string{"notes/2", "notes:x"}) {
		t.Errorf("list notes after delete = %q", got)
	}

	res, body := call(t, nil, "PATCH", kv.base+"/x", kv.token, nil)
	wantProblem(t, res, body, http.StatusMethodNotAllowed)
	res, body = call(t, nil, "POST", kv.base+"/x", kv.token, nil)
	wantProblem(t, res, body, http.StatusBadRequest) // POST is incr only
	res, body = call(t, nil, "DELETE", kv.base+"/", kv.token, nil)
	wantProblem(t, res, body, http.StatusMethodNotAllowed)
}

func TestKVListLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")
	// Fill the bucket in one transaction: 1001 PUTs would be 1001 fsyncs.
	err := f.m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("a"))
		if err != nil {
			return err
		}
		for i := range maxListKeys + 1 {
			if err := b.Put(fmt.Appendf(nil, "k%04d", i), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l := kv.list("k")
	if len(l.Keys) != maxListKeys || !l.Truncated {
		t.Errorf("listing of %d keys: %d keys, truncated %v; want %d, true", maxListKeys+1, len(l.Keys), l.Truncated, maxListKeys)
	}
	if !slices.IsSorted(l.Keys) {
		t.Error("keys are not sorted")
	}
}

func TestKVNamespaces(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	a, b := f.kv(t, "a"), f.kv(t, "b")

	a.put("shared-name", "from a")
	if _, ok := b.get("shared-name"); ok {
		t.Error("plugin b reads plugin a's key")
	}
	if got := b.list("").Keys; len(got) != 0 {
		t.Errorf("plugin b lists %q", got)
	}
	b.put("shared-name", "from b")
	b.del("shared-name")
	if v, _ := a.get("shared-name"); v != "from a" {
		t.Errorf("a's value after b's put and delete = %q", v)
	}
}

func TestKVValueLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")

	exact := bytes.Repeat([]byte("x"), maxValueLen)
	res, body := call(t, nil, "PUT", kv.base+"/kv/exact", kv.token, bytes.NewReader(exact))
	wantStatus(t, res, body, http.StatusNoContent)

	over := bytes.Repeat([]byte("x"), maxValueLen+1)
	res, body = call(t, nil, "PUT", kv.base+"/kv/over", kv.token, bytes.NewReader(over))
	wantProblem(t, res, body, http.StatusRequestEntityTooLarge)

	// Without a Content-Length (chunked) the limit holds too, while reading.
	res, body = call(t, nil, "PUT", kv.base+"/kv/chunked", kv.token, struct{ io.Reader }{bytes.NewReader(over)})
	wantProblem(t, res, body, http.StatusRequestEntityTooLarge)
	if _, ok := kv.get("over"); ok {
		t.Error("over-size value was stored")
	}
	if _, ok := kv.get("chunked"); ok {
		t.Error("over-size chunked value was stored")
	}
}

func TestKVBadKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")
	tests := map[string]string{
		"empty":         "",
		"dot-dot":       "..",
		"dot-dot inner": "a/../b",
		"300 chars":     strings.Repeat("k", 300),
		"space":         "a%20b",
		"percent":       "a%25b",
		"unicode":       "%C3%A9",
	}
	for name, key := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, method := range []string{"GET", "PUT", "POST", "DELETE"} {
				for i, u := range []string{kv.base + "/kv/" + key + "?incr=1", kv.base + "/" + key + "?incr=1"} {
					if key == "" && i == 1 {
						continue // base/ is the listing
					}
					res, body := call(t, nil, method, u, kv.token, strings.NewReader("v"))
					wantProblem(t, res, body, http.StatusBadRequest)
				}
			}
		})
	}
	// The edges that are allowed.
	kv.put(strings.Repeat("k", maxKeyLen), "max")
	kv.put("A-z_0.9:/x", "charset")
	kv.put("a..b", "dots inside a segment")
}

func TestCheckKey(t *testing.T) {
	t.Parallel()
	for key, ok := range map[string]bool{
		"a": true, "a/b": true, "./a": true, "a..b": true, strings.Repeat("k", 256): true,
		"": false, "..": false, "../a": false, "a/..": false, "a b": false, "a\x00": false, strings.Repeat("k", 257): false,
	} {
		if err := checkKey(key); (err == nil) != ok {
			t.Errorf("checkKey(%q) = %v, want ok %v", key, err, ok)
		}
	}
}

func TestKVPersistence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, err := New(Options{StateDir: dir, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	kvConfig(m)
	m.Allow("a", 1)
	tok := m.Token("a", 1)
	rec := serveLocal(m.PluginHandler("a"), "PUT", "/services/kv/kv/keep", tok, strings.NewReader("me"))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", rec.Code, rec.Body)
	}

	// A second manager on the same state dir must fail, not share the file.
	if _, err := newManager(Options{StateDir: dir, Key: testKey}, limits{lock: 50 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("second New on a locked kv.db: %v, want a lock error", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m2, err := New(Options{StateDir: dir, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	kvConfig(m2)
	m2.Allow("a", 1) // same key: the adopted container's token still works
	rec = serveLocal(m2.PluginHandler("a"), "GET", "/services/kv/kv/keep", tok, nil)
	if rec.Code != http.StatusOK || rec.Body.String() != "me" {
		t.Errorf("GET after reopen: %d %q, want 200 \"me\"", rec.Code, rec.Body)
	}
}

// PluginHandler serves the same API on a unix socket, without the /p/<plugin> prefix,
// and shares the namespace with the TCP endpoint.
func TestKVPluginHandlerUnixSocket(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	tcp := f.kv(t, "a")

	sock := filepath.Join(t.TempDir(), "services.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f.m.PluginHandler("a")}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	unix := kvClient{t: t, c: c, base: "http://xcore/services/kv", token: tcp.token}

	unix.put("via-socket", "1")
	if v, ok := tcp.get("via-socket"); !ok || v != "1" {
		t.Errorf("TCP GET of a key put over the socket = %q, %v", v, ok)
	}
	tcp.put("via-tcp", "2")
	if v, ok := unix.get("via-tcp"); !ok || v != "2" {
		t.Errorf("socket GET of a key put over TCP = %q, %v", v, ok)
	}
	if got := unix.list("via").Keys; !slices.Equal(got, []string{"via-socket", "via-tcp"}) {
		t.Errorf("socket list = %q", got)
	}
	unix.del("via-tcp")
	if _, ok := tcp.get("via-tcp"); ok {
		t.Error("deleted over the socket, still found over TCP")
	}

	res, body := call(t, c, "GET", "http://xcore/services/kv/kv/x", f.m.Token("b", 1), nil)
	wantProblem(t, res, body, http.StatusUnauthorized)
}
