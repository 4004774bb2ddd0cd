package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xcore/runner/runner"
)

func newTestMetrics() *Metrics { return NewMetrics(prometheus.NewRegistry()) }

// scrape fetches /metrics through the admin API and parses it with the Prometheus
// text parser.
func scrape(t *testing.T, h *harness) map[string]*dto.MetricFamily {
	t.Helper()
	resp := h.do("GET", "/metrics", nil, func(r *http.Request) { r.Header.Set("Accept", "text/plain; version=0.0.4") })
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the series of family name whose labels include want, and
// whether it exists.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestRequestMetricsCountExactly(t *testing.T) {
	t.Parallel()
	m := newTestMetrics()
	h := newHarness(t, Options{Metrics: m})
	m.RequestDone("hello", 200, time.Millisecond) // the series exists before
	before := scrape(t, h)
	b2xx, _ := value(before, "xcore_requests_total", map[string]string{"plugin": "hello", "code_class": "2xx"})

	const n = 37
	for i := range n {
		m.RequestDone("hello", 200+i%2, 3*time.Millisecond)
	}
	m.RequestDone("hello", 503, time.Second)
	m.RequestDone("hello", 499, time.Second) // the client went away
	m.RequestDone("crashy", 302, time.Millisecond)

	after := scrape(t, h)
	a2xx, _ := value(after, "xcore_requests_total", map[string]string{"plugin": "hello", "code_class": "2xx"})
	if a2xx-b2xx != n {
		t.Errorf("xcore_requests_total{plugin=hello,code_class=2xx} rose by %v, want %d", a2xx-b2xx, n)
	}
	for class, want := range map[string]float64{"5xx": 1, "4xx": 1} {
		if v, _ := value(after, "xcore_requests_total", map[string]string{"plugin": "hello", "code_class": class}); v != want {
			t.Errorf("%s = %v, want %v", class, v, want)
		}
	}
	if v, _ := value(after, "xcore_requests_total", map[string]string{"plugin": "crashy", "code_class": "3xx"}); v != 1 {
		t.Errorf("crashy 3xx = %v", v)
	}
	if f := after["xcore_request_duration_seconds"]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("no request duration histogram")
	}
	if c, _ := value(after, "xcore_request_duration_seconds", map[string]string{"plugin": "hello"}); c != n+3 {
		t.Errorf("duration sample count %v, want %d", c, n+3)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if after[name] == nil {
			t.Errorf("%s missing: the Go and process collectors are not registered", name)
		}
	}
}

func TestEventMetrics(t *testing.T) {
	t.Parallel()
	m := newTestMetrics()
	h := newHarness(t, Options{Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, unsubscribe := h.f.Subscribe()
	defer unsubscribe()
	done := make(chan struct{})
	go func() { m.Run(ctx, events); close(done) }()

	st := hello
	h.f.publish(runner.Event{Type: runner.EventState, Plugin: "hello", Status: &st})
	eventually(t, "restart counter at 0 once the plugin is known", func() bool {
		v, ok := value(scrape(t, h), "xcore_plugin_restarts_total", map[string]string{"plugin": "hello"})
		return ok && v == 0
	})
	h.f.publish(runner.Event{Type: runner.EventRestart, Plugin: "hello"})
	h.f.publish(runner.Event{Type: runner.EventProbeFailed, Plugin: "hello", Message: "timeout"})
	h.f.publish(runner.Event{Type: runner.EventProbeFailed, Plugin: "hello", Message: "timeout"})
	h.f.publish(runner.Event{Type: runner.EventReplaced, Plugin: "hello", Duration: 1500 * time.Millisecond})
	h.f.publish(runner.Event{Type: runner.EventReplaceFail, Plugin: "hello"})
	h.f.publish(runner.Event{Type: runner.EventReload, OK: true}) // no plugin: ignored

	want := map[string]float64{
		"xcore_plugin_restarts_total":        1,
		"xcore_health_probe_failures_total":  2,
		"xcore_replacement_failures_total":   1,
		"xcore_replacement_duration_seconds": 1, // sample count
	}
	eventually(t, "event counters", func() bool {
		fams := scrape(t, h)
		for name, w := range want {
			if v, _ := value(fams, name, map[string]string{"plugin": "hello"}); v != w {
				return false
			}
		}
		return true
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

type inFlight map[string]int

func (f inFlight) get(name string) int { return f[name] }

func TestScrapeTimeGauges(t *testing.T) {
	t.Parallel()
	m := newTestMetrics()
	h := newHarness(t, Options{Metrics: m})
	fams := scrape(t, h)
	if fams["xcore_plugin_state"] != nil {
		t.Error("state gauge before a source is set")
	}
	m.SetSource(Source{Statuses: h.f.Statuses, InFlight: inFlight{"hello": 3}.get})
	fams = scrape(t, h)
	for _, s := range states {
		want := 0.0
		if s == runner.StateHealthy {
			want = 1
		}
		if v, ok := value(fams, "xcore_plugin_state", map[string]string{"plugin": "hello", "state": string(s)}); !ok || v != want {
			t.Errorf("xcore_plugin_state{hello,%s} = %v (exists %v), want %v", s, v, ok, want)
		}
	}
	if v, _ := value(fams, "xcore_plugin_state", map[string]string{"plugin": "crashy", "state": "failed"}); v != 1 {
		t.Errorf("crashy failed = %v", v)
	}
	if v, _ := value(fams, "xcore_in_flight_requests", map[string]string{"plugin": "hello"}); v != 3 {
		t.Errorf("in flight = %v, want 3", v)
	}
	if v, ok := value(fams, "xcore_plugin_restarts_total", map[string]string{"plugin": "crashy"}); !ok || v != 0 {
		t.Errorf("counters of known plugins do not start at 0: %v %v", v, ok)
	}
}

// A plugin of three replicas, one of them restarting: the instance gauges count them
// by state, and the restarts of each replica are a series of its own.
func TestInstanceGauges(t *testing.T) {
	t.Parallel()
	m := newTestMetrics()
	h := newHarness(t, Options{Metrics: m})
	three := hello
	three.Replicas, three.Ready = 3, 2
	three.Instances = []runner.InstanceStatus{
		{Replica: 0, Container: "c0", State: runner.StateHealthy},
		{Replica: 1, State: runner.StateRestarting, Restarts: 2, LastExit: "exit code 137"},
		{Replica: 2, Container: "c2", State: runner.StateHealthy},
	}
	h.f.setStatus(three)
	m.SetSource(Source{Statuses: h.f.Statuses})
	fams := scrape(t, h)
	hello := map[string]string{"plugin": "hello"}
	for name, want := range map[string]float64{"xcore_plugin_replicas": 3, "xcore_plugin_ready_instances": 2} {
		if v, ok := value(fams, name, hello); !ok || v != want {
			t.Errorf("%s{plugin=hello} = %v (exists %v), want %v", name, v, ok, want)
		}
	}
	for state, want := range map[runner.State]float64{
		runner.StateHealthy: 2, runner.StateRestarting: 1, runner.StateStarting: 0, runner.StateUnhealthy: 0, runner.StateFailed: 0,
	} {
		if v, ok := value(fams, "xcore_plugin_instances", map[string]string{"plugin": "hello", "state": string(state)}); !ok || v != want {
			t.Errorf("xcore_plugin_instances{hello,%s} = %v (exists %v), want %v", state, v, ok, want)
		}
	}
	for replica, want := range map[string]float64{"0": 0, "1": 2, "2": 0} {
		if v, ok := value(fams, "xcore_instance_restarts", map[string]string{"plugin": "hello", "replica": replica}); !ok || v != want {
			t.Errorf("xcore_instance_restarts{hello,replica=%s} = %v (exists %v), want %v", replica, v, ok, want)
		}
	}
	// A failed plugin without a generation: 0 ready of 0, no instance series.
	if v, ok := value(fams, "xcore_plugin_ready_instances", map[string]string{"plugin": "crashy"}); !ok || v != 0 {
		t.Errorf("crashy ready = %v (exists %v)", v, ok)
	}
	if _, ok := value(fams, "xcore_instance_restarts", map[string]string{"plugin": "crashy"}); ok {
		t.Error("crashy has an instance series without instances")
	}
}

func TestMetricsWithoutMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	wantProblem(t, h.do("GET", "/metrics", nil), http.StatusNotFound)
}

func TestMetricsDefaultGatherer(t *testing.T) {
	t.Parallel()
	// A Registerer that is not a Gatherer: the handler falls back to the default one.
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"x": "y"}, prometheus.NewRegistry())
	m := NewMetrics(reg)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Errorf("status %d", rec.Code)
	}
}

// BenchmarkRequestDone is the Observer's cost on every proxied request.
func BenchmarkRequestDone(b *testing.B) {
	m := newTestMetrics()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			m.RequestDone("hello", 200+i%2*300, time.Millisecond)
		}
	})
}
