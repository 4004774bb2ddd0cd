package services

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The documented URL is $KV_URL{key}; the first form, $KV_URL kv/{key}, names the same
// keys.
func TestKVURLForms(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")
	legacy := kvClient{t: t, base: kv.base + "/kv", token: kv.token}

	kv.put("notes/1", "new form")
	if v, ok := legacy.get("notes/1"); !ok || v != "new form" {
		t.Errorf("GET kv/notes/1 of a key PUT at notes/1 = %q, %v", v, ok)
	}
	legacy.put("notes/2", "old form")
	if v, ok := kv.get("notes/2"); !ok || v != "old form" {
		t.Errorf("GET notes/2 of a key PUT at kv/notes/2 = %q, %v", v, ok)
	}
	want := []string{"notes/1", "notes/2"}
	for _, u := range []string{kv.base + "?prefix=notes/", kv.base + "/?prefix=notes/", kv.base + "/kv?prefix=notes/"} {
		res, body := call(t, nil, "GET", u, kv.token, nil)
		wantStatus(t, res, body, http.StatusOK)
		if !strings.Contains(string(body), `"keys":["notes/1","notes/2"]`) {
			t.Errorf("GET %s = %s, want keys %q", u, body, want)
		}
	}
	// A first segment "kv" is the first form: kv/x is the key x.
	kv.put("kv/x", "aliased")
	if v, ok := kv.get("x"); !ok || v != "aliased" {
		t.Errorf("GET x after PUT kv/x = %q, %v; want the first form's key x", v, ok)
	}
	legacy.del("notes/1")
	if _, ok := kv.get("notes/1"); ok {
		t.Error("deleted through the first form, still found")
	}
}

func TestKVETags(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")

	res, body := kv.do("PUT", "k", strings.NewReader("one"))
	wantStatus(t, res, body, http.StatusNoContent)
	put := res.Header.Get("ETag")
	res, body = kv.do("GET", "k", nil)
	wantStatus(t, res, body, http.StatusOK)
	tag := res.Header.Get("ETag")
	if tag == "" || !strings.HasPrefix(tag, `"`) || !strings.HasSuffix(tag, `"`) || tag != put {
		t.Fatalf("GET ETag %q, PUT ETag %q: want one strong (quoted) tag", tag, put)
	}
	if res, _ := kv.do("HEAD", "k", nil); res.Header.Get("ETag") != tag {
		t.Errorf("HEAD ETag %q, want %q", res.Header.Get("ETag"), tag)
	}
	res, body = kv.do("GET", "k", nil, "If-None-Match", tag)
	if res.StatusCode != http.StatusNotModified || len(body) != 0 || res.Header.Get("ETag") != tag {
		t.Errorf("GET If-None-Match current: %d %q ETag %q, want 304 without a body", res.StatusCode, body, res.Header.Get("ETag"))
	}

	weak := "W/" + tag
	stale := `"0000"`
	tests := []struct {
		name    string
		method  string
		key     string
		header  []string
		want    int
		wantVal string // the value of k afterwards
	}{
		{"PUT If-Match stale", "PUT", "k", []string{"If-Match", stale}, 412, "one"},
		{"PUT If-Match weak never matches", "PUT", "k", []string{"If-Match", weak}, 412, "one"},
		{"PUT If-None-Match * on an existing key", "PUT", "k", []string{"If-None-Match", "*"}, 412, "one"},
		{"PUT If-None-Match current", "PUT", "k", []string{"If-None-Match", weak}, 412, "one"},
		{"DELETE If-Match stale", "DELETE", "k", []string{"If-Match", stale}, 412, "one"},
		{"POST incr If-Match stale", "POST", "k?incr=1", []string{"If-Match", stale}, 412, "one"},
		{"GET If-Match stale", "GET", "k", []string{"If-Match", stale}, 412, "one"},
		{"PUT If-Match * on a missing key", "PUT", "missing", []string{"If-Match", "*"}, 412, "one"},
		{"DELETE If-Match * on a missing key", "DELETE", "missing", []string{"If-Match", "*"}, 412, "one"},
		{"PUT If-Match one of a list", "PUT", "k", []string{"If-Match", stale + ", " + tag}, 204, "two"},
	}
	for _, tt := range tests { // in order: the last one changes k
		res, body := kv.do(tt.method, tt.key, strings.NewReader("two"), tt.header...)
		if res.StatusCode != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, res.StatusCode, body, tt.want)
		} else if tt.want == 412 {
			wantProblem(t, res, body, 412)
		}
		if v, _ := kv.get("k"); v != tt.wantVal {
			t.Errorf("%s: k = %q afterwards, want %q", tt.name, v, tt.wantVal)
		}
	}
	if _, ok := kv.get("missing"); ok {
		t.Error("a PUT with If-Match * created a missing key")
	}

	// Create-only, then delete-if-unchanged.
	res, body = kv.do("PUT", "new", strings.NewReader("v"), "If-None-Match", "*")
	wantStatus(t, res, body, http.StatusNoContent)
	res, body = kv.do("DELETE", "new", nil, "If-Match", res.Header.Get("ETag"))
	wantStatus(t, res, body, http.StatusNoContent)
	if _, ok := kv.get("new"); ok {
		t.Error("DELETE If-Match current did not delete")
	}
	// A GET of a missing key is a 404 whatever its conditions (RFC 9110 §13.2.1).
	res, body = kv.do("GET", "new", nil, "If-Match", "*")
	wantProblem(t, res, body, http.StatusNotFound)
}

func TestMatchesAny(t *testing.T) {
	t.Parallel()
	const tag = `"abc"`
	tests := []struct {
		header     string
		weak, want bool
	}{
		{`"abc"`, false, true},
		{`*`, false, true},
		{`"x", "abc"`, false, true},
		{`"x","abc"`, false, true},
		{`W/"abc"`, false, false},
		{`W/"abc"`, true, true},
		{`"ab"`, false, false},
		{`abc`, false, false},
		{`"abc`, false, false},
		{``, false, false},
		{`"a,b", "abc"`, false, true}, // a comma inside a tag is part of it
	}
	for _, tt := range tests {
		if got := matchesAny([]string{tt.header}, tag, tt.weak); got != tt.want {
			t.Errorf("matchesAny(%q, weak %v) = %v, want %v", tt.header, tt.weak, got, tt.want)
		}
	}
	if matchesAny([]string{"*"}, "", false) {
		t.Error("* matched a missing value")
	}
}

func TestKVIncr(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")
	incr := func(key, n string) (int, string) {
		t.Helper()
		res, body := kv.do("POST", key+"?incr="+url.QueryEscape(n), nil)
		if res.StatusCode == http.StatusOK {
			if tag, _ := kv.do("HEAD", key, nil); res.Header.Get("ETag") != tag.Header.Get("ETag") {
				t.Errorf("incr ETag %q, GET's %q", res.Header.Get("ETag"), tag.Header.Get("ETag"))
			}
		}
		return res.StatusCode, string(body)
	}
	steps := []struct {
		key, n string
		want   int
		body   string // the answer to a 200; the value of key afterwards either way
	}{
		{"c", "1", 200, "1"}, // a missing key counts as 0
		{"c", "41", 200, "42"},
		{"c", "-50", 200, "-8"},
		{"c", "0", 200, "-8"},
		{"c", "+3", 200, "-5"},
		{"c", "x", 400, "-5"},
		{"c", "1.5", 400, "-5"},
		{"c", "", 400, "-5"},
		{"c", "99999999999999999999", 400, "-5"},
		{"max", "9223372036854775807", 200, "9223372036854775807"},
		{"max", "1", 409, "9223372036854775807"},
		{"text", "1", 409, "hello"},
	}
	kv.put("text", "hello")
	for _, s := range steps {
		code, body := incr(s.key, s.n)
		if code != s.want || (code == 200 && body != s.body) {
			t.Errorf("incr %s by %q: %d %s, want %d %s", s.key, s.n, code, body, s.want, s.body)
		}
		if v, _ := kv.get(s.key); v != s.body {
			t.Errorf("after incr %s by %q: value %q, want %q", s.key, s.n, v, s.body)
		}
	}
	// What `echo 7 | curl -T-` stores: spaces around the number are fine, and go.
	kv.put("spaced", " 7\n")
	if code, body := incr("spaced", "1"); code != 200 || body != "8" {
		t.Errorf("incr of \" 7\\n\": %d %q, want 200 8", code, body)
	}
}

// 20 clients add 1 to the same counter at once: every increment counts, and each client
// sees a different total (they were applied one after the other).
func TestKVConcurrentIncr(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")
	const n = 20
	seen := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, body := kv.do("POST", "hits?incr=1", nil)
			if res.StatusCode != http.StatusOK {
				t.Errorf("incr: %d %s", res.StatusCode, body)
				return
			}
			seen[i], _ = strconv.Atoi(string(body))
		})
	}
	wg.Wait()
	if v, _ := kv.get("hits"); v != strconv.Itoa(n) {
		t.Errorf("after %d concurrent incr=1: %q, want %d", n, v, n)
	}
	slices.Sort(seen)
	for i, v := range seen {
		if v != i+1 {
			t.Fatalf("the answers were %v, want 1 to %d once each", seen, n)
		}
	}
}

// 20 clients each read the counter, add 1 and write it back with If-Match, retrying on
// 412. All 20 read before any writes (a barrier), the interleaving that loses updates
// without a condition: exactly one write of that round may win.
func TestKVConcurrentReadIncrementWrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	kv := f.kv(t, "a")
	kv.put("count", "0")
	const n = 20
	var read sync.WaitGroup
	read.Add(n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conflicts := 0
	for range n {
		wg.Go(func() {
			first := true
			for attempt := 0; attempt < 10*n; attempt++ {
				res, body := kv.do("GET", "count", nil)
				if res.StatusCode != http.StatusOK {
					t.Errorf("GET: %d %s", res.StatusCode, body)
					return
				}
				tag := res.Header.Get("ETag")
				v, err := strconv.Atoi(string(body))
				if err != nil || tag == "" {
					t.Errorf("GET: %q ETag %q", body, tag)
					return
				}
				if first {
					first = false
					read.Done()
					read.Wait()
				}
				res, body = kv.do("PUT", "count", strings.NewReader(strconv.Itoa(v+1)), "If-Match", tag)
				switch res.StatusCode {
				case http.StatusNoContent:
					return
				case http.StatusPreconditionFailed:
					mu.Lock()
					conflicts++
					mu.Unlock()
				default:
					t.Errorf("PUT: %d %s", res.StatusCode, body)
					return
				}
			}
			t.Error("no write won in 200 attempts")
		})
	}
	wg.Wait()
	if v, _ := kv.get("count"); v != strconv.Itoa(n) {
		t.Errorf("after %d concurrent read-increment-writes: %q, want %d", n, v, n)
	}
	if conflicts < n-1 {
		t.Errorf("%d writes got 412; with %d reads of one value before any write, want at least %d", conflicts, n, n-1)
	}
	t.Logf("%d increments, %d retries after a 412", n, conflicts)
}
