package main

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The first event arrives at once (flushed before the second is due), then the others,
// then the stream ends.
func TestEventsStream(t *testing.T) {
	srv := httptest.NewServer(events("hi", "hello"))
	defer srv.Close()
	begin := time.Now()
	resp, err := http.Get(srv.URL + "/events?n=3&every=300ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if v := resp.Header.Get("X-Accel-Buffering"); v != "no" {
		t.Errorf("X-Accel-Buffering %q", v)
	}
	rd := bufio.NewReader(resp.Body)
	var events []string
	var firstAt time.Duration
	var cur []string
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			break
		}
		line = strings.TrimRight(line, "\n")
		if line != "" {
			cur = append(cur, line)
			continue
		}
		if len(events) == 0 {
			firstAt = time.Since(begin)
		}
		events = append(events, strings.Join(cur, "|"))
		cur = nil
	}
	took := time.Since(begin)
	want := []string{
		"id: 1|event: tick|data: hi from hello 1/3",
		"id: 2|event: tick|data: hi from hello 2/3",
		"id: 3|event: tick|data: hi from hello 3/3",
	}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
	if firstAt >= 250*time.Millisecond {
		t.Errorf("first event after %s: not flushed at once", firstAt)
	}
	if took < 550*time.Millisecond {
		t.Errorf("stream of 3 events 300ms apart took %s", took)
	}
}

func TestEventsBounds(t *testing.T) {
	h := events("hi", "hello")
	for _, c := range []struct {
		method, query string
		code          int
	}{
		{http.MethodPost, "", http.StatusMethodNotAllowed},
		{http.MethodGet, "n=0", http.StatusBadRequest},
		{http.MethodGet, "n=101", http.StatusBadRequest},
		{http.MethodGet, "n=x", http.StatusBadRequest},
		{http.MethodGet, "every=-1s", http.StatusBadRequest},
		{http.MethodGet, "n=100&every=1s", http.StatusBadRequest}, // 99 s
		{http.MethodGet, "n=2&every=0s", http.StatusOK},
	} {
		w := httptest.NewRecorder()
		h(w, httptest.NewRequest(c.method, "/events?"+c.query, nil))
		if w.Code != c.code {
			t.Errorf("%s /events?%s: %d, want %d (%s)", c.method, c.query, w.Code, c.code, w.Body)
		}
	}
}
