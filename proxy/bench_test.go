package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
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
	defer reportCPU(b)()
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
	benchHandler(b, New(Options{}))
}

// BenchmarkProxyHandlerTransport is BenchmarkProxyHandler with every request
// through http.Transport (no fast path): the other design of issue 18, side by side.
func BenchmarkProxyHandlerTransport(b *testing.B) {
	p := New(Options{})
	p.noFast = true
	benchHandler(b, p)
}

// BenchmarkProxyHandlerObserved is BenchmarkProxyHandler with an Observer, as
// the runner always has one (its metrics).
func BenchmarkProxyHandlerObserved(b *testing.B) {
	benchHandler(b, New(Options{Observer: nopObserver{}}))
}

func benchHandler(b *testing.B, p *Proxy) {
	b.Cleanup(p.Close)
	p.SetReady("hello", backendOf(b, upstream(b, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, "/plugins/hello/echo?x=1", nil)
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Errorf("status %d", rec.Code)
				return
			}
		}
	})
}

type nopObserver struct{}

func (nopObserver) RequestDone(string, int, time.Duration) {}

// reportCPU resets the timer and returns a func reporting the process's user+system
// CPU time per operation: on a shared machine it varies less than the wall time of
// ns/op, which waits for the CPU whenever other processes have it. It counts the
// in-process client and upstream too.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	b.ResetTimer()
	return func() {
		b.StopTimer()
		b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIdleCheck is the fast path's price for never reading unsolicited bytes as
// an answer (issue 18): the non-blocking peek at an idle connection, once per request.
func BenchmarkIdleCheck(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	defer (<-accepted).Close()
	c := &upConn{Conn: nc}
	c.initIdleCheck()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if !c.quiet() {
			b.Fatal("an idle connection with nothing on it is not quiet")
		}
	}
}
