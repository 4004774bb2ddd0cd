//go:build linux

package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user + system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// /work?ms=N costs the process about N ms of CPU; it refuses what is out of bounds.
func TestWork(t *testing.T) {
	srv := httptest.NewServer(work("hi", "hello"))
	defer srv.Close()
	get := func(q string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/work" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("?ms=1"); code != 200 || body != "hi from hello: 1 ms of work\n" {
		t.Fatalf("GET /work?ms=1: %d %q", code, body)
	}
	before := cpuTime()
	if code, _ := get("?ms=60"); code != 200 {
		t.Fatalf("GET /work?ms=60: %d", code)
	}
	// The request's CPU plus the test's own (client and server, well under 10 ms).
	if used := cpuTime() - before; used < 40*time.Millisecond || used > 150*time.Millisecond {
		t.Errorf("GET /work?ms=60 used %s of CPU, want about 60ms", used)
	}
	for _, q := range []string{"?ms=101", "?ms=-1", "?ms=two", "?ms=NaN"} {
		if code, _ := get(q); code != http.StatusBadRequest {
			t.Errorf("GET /work%s: %d, want 400", q, code)
		}
	}
	resp, err := http.Post(srv.URL+"/work", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /work: %d", resp.StatusCode)
	}
}

// Eight spins that share one core (GOMAXPROCS 1, all started at once) each get their
// 25 ms of CPU: about 200 ms in all (at least 120 on a noisy host), where a spin on the
// wall clock used 34 to 68 ms.
func TestWorkCountsCPUNotWaiting(t *testing.T) {
	defer runtimeGOMAXPROCS(1)()
	start := make(chan struct{})
	var ready, wg sync.WaitGroup
	for range 8 {
		ready.Add(1)
		wg.Go(func() {
			ready.Done()
			<-start
			spinFor(25 * time.Millisecond)
		})
	}
	ready.Wait()
	before := cpuTime()
	close(start)
	wg.Wait()
	if used := cpuTime() - before; used < 120*time.Millisecond {
		t.Errorf("8 spins of 25ms on one core used %s of CPU, want about 200ms", used)
	}
}

func runtimeGOMAXPROCS(n int) (restore func()) {
	old := runtime.GOMAXPROCS(n)
	return func() { runtime.GOMAXPROCS(old) }
}
