package admin

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/runner"
)

// Metrics are the runner's Prometheus metrics. Request metrics come from the proxy (as
// its Observer), restart/replacement/probe counters from the runner's events (Run), and
// the in-flight and state gauges are read at scrape time (SetSource).
type Metrics struct {
	gatherer prometheus.Gatherer

	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	restarts        *prometheus.CounterVec
	replaceDuration *prometheus.HistogramVec
	replaceFailures *prometheus.CounterVec
	probeFailures   *prometheus.CounterVec

	src atomic.Pointer[Source]

	// perPlugin caches each plugin's request series (plugin name → *requestSeries):
	// RequestDone runs once per proxied request, and WithLabelValues hashes the labels
	// and takes a lock each time. No series is ever deleted, so an entry never goes stale.
	perPlugin sync.Map

	now func() time.Time // the clock of the status page's rates; time.Now but in tests
}

// requestSeries are one plugin's request metrics, each looked up once.
type requestSeries struct {
	plugin   string
	duration prometheus.Observer
	// byClass is resolved on a class's first request, as WithLabelValues did: a
	// plugin that never answered 5xx has no 5xx series.
	byClass [len(codeClasses)]atomic.Pointer[prometheus.Counter]
	// rates are the status page's per-second numbers (rates.go).
	rates rateRing
}

// codeClasses are the code_class label values; index status/100, 0 for out of range.
var codeClasses = [...]string{"unknown", "1xx", "2xx", "3xx", "4xx", "5xx"}

var _ proxy.Observer = (*Metrics)(nil)

// Source is what the scrape-time gauges read: the plugins' statuses and the proxy's
// in-flight counts.
type Source struct {
	Statuses func() []runner.Status
	InFlight func(plugin string) int
}

// states are every State a plugin can be in: xcore_plugin_state has one series each.
var states = []runner.State{
	runner.StatePending, runner.StatePulling, runner.StateStarting, runner.StateHealthy, runner.StateUnhealthy,
	runner.StateRestarting, runner.StateFailed, runner.StateStopped,
}

var (
	descInFlight = prometheus.NewDesc("xcore_in_flight_requests",
		"Requests being proxied to the plugin right now.", []string{"plugin"}, nil)
	descState = prometheus.NewDesc("xcore_plugin_state",
		"The plugin's state: 1 for the current one, 0 for the others.", []string{"plugin", "state"}, nil)
	descReplicas = prometheus.NewDesc("xcore_plugin_replicas",
		"Instances the plugin's serving generation has (supervisor { replicas }).", []string{"plugin"}, nil)
	descReady = prometheus.NewDesc("xcore_plugin_ready_instances",
		"Instances of the serving generation in the proxy's rotation.", []string{"plugin"}, nil)
	descInstances = prometheus.NewDesc("xcore_plugin_instances",
		"Instances of the serving generation by state.", []string{"plugin", "state"}, nil)
	// "replica", not "instance": Prometheus puts its own instance label (the scraped
	// target) on every series, and a clash would rename ours to exported_instance.
	descInstanceRestarts = prometheus.NewDesc("xcore_instance_restarts",
		"Containers started again in this replica's slot of the serving generation (back to 0 with a new generation).",
		[]string{"plugin", "replica"}, nil)
)

// instanceStates are the states an instance can be in: xcore_plugin_instances has one
// series each, so that a state that empties reads 0 rather than vanishing.
var instanceStates = []runner.State{
	runner.StateStarting, runner.StateHealthy, runner.StateUnhealthy, runner.StateRestarting, runner.StateFailed,
}

// NewMetrics registers the runner's metrics, and the Go and process collectors, with reg.
// When reg is also a Gatherer (a *prometheus.Registry), Handler serves it; otherwise
// Handler serves prometheus.DefaultGatherer.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		now: time.Now,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xcore_requests_total",
			Help: "Requests proxied to a plugin, by status class (2xx, 3xx, 4xx, 5xx); a client that went away counts as 4xx.",
		}, []string{"plugin", "code_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xcore_request_duration_seconds",
			Help:    "Time from receiving a request to the end of the plugin's response.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"plugin"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xcore_plugin_restarts_total",
			Help: "Containers started again after a crash, an OOM kill or failed health probes.",
		}, []string{"plugin"}),
		replaceDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xcore_replacement_duration_seconds",
			Help:    "Start-first replacements, from creating the new container to removing the old one.",
			Buckets: []float64{.5, 1, 2, 5, 10, 20, 30, 60, 120, 300},
		}, []string{"plugin"}),
		replaceFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xcore_replacement_failures_total",
			Help: "Replacements whose new container never got healthy (the old one kept serving).",
		}, []string{"plugin"}),
		probeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xcore_health_probe_failures_total",
			Help: "Failed health probes.",
		}, []string{"plugin"}),
	}
	reg.MustRegister(
		m.requests, m.duration, m.restarts, m.replaceDuration, m.replaceFailures, m.probeFailures,
		gauges{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.gatherer = prometheus.DefaultGatherer
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	}
	return m
}

// RequestDone counts one finished request (proxy.Observer).
func (m *Metrics) RequestDone(plugin string, status int, d time.Duration) {
	s, ok := m.perPlugin.Load(plugin)
	if !ok {
		s, _ = m.perPlugin.LoadOrStore(plugin, m.newRequestSeries(plugin))
	}
	rs := s.(*requestSeries)
	m.requestCounter(rs, codeClassIndex(status)).Inc()
	rs.duration.Observe(d.Seconds())
	rs.rates.record(m.now().Unix(), status, d)
}

func (m *Metrics) newRequestSeries(plugin string) *requestSeries {
	return &requestSeries{plugin: plugin, duration: m.duration.WithLabelValues(plugin)}
}

// requestCounter returns rs's counter of class i. Two first requests racing both
// resolve it; the vector hands both the same child.
func (m *Metrics) requestCounter(rs *requestSeries, i int) prometheus.Counter {
	if c := rs.byClass[i].Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(rs.plugin, codeClasses[i])
	rs.byClass[i].Store(&c)
	return c
}

func codeClassIndex(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}

// SetSource sets what the in-flight and state gauges read at scrape time.
func (m *Metrics) SetSource(s Source) {
	m.src.Store(&s)
	if s.Statuses != nil {
		for _, st := range s.Statuses() {
			m.touch(st.Name)
		}
	}
}

// Run counts the events of a runner subscription until ctx ends or the channel closes.
func (m *Metrics) Run(ctx context.Context, events <-chan runner.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			m.observe(ev)
		}
	}
}

func (m *Metrics) observe(ev runner.Event) {
	if ev.Plugin == "" {
		return
	}
	m.touch(ev.Plugin)
	switch ev.Type {
	case runner.EventRestart:
		m.restarts.WithLabelValues(ev.Plugin).Inc()
	case runner.EventReplaced:
		m.replaceDuration.WithLabelValues(ev.Plugin).Observe(ev.Duration.Seconds())
	case runner.EventReplaceFail:
		m.replaceFailures.WithLabelValues(ev.Plugin).Inc()
	case runner.EventProbeFailed:
		m.probeFailures.WithLabelValues(ev.Plugin).Inc()
	}
}

// touch makes a plugin's counters exist at 0, so that rate() and increase() see the
// first restart or failure as an increase.
func (m *Metrics) touch(plugin string) {
	m.restarts.WithLabelValues(plugin)
	m.replaceFailures.WithLabelValues(plugin)
	m.probeFailures.WithLabelValues(plugin)
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

// gauges reads the per-plugin gauges from the Source at scrape time.
type gauges struct{ m *Metrics }

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInFlight
	ch <- descState
	ch <- descReplicas
	ch <- descReady
	ch <- descInstances
	ch <- descInstanceRestarts
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	src := g.m.src.Load()
	if src == nil || src.Statuses == nil {
		return
	}
	for _, st := range src.Statuses() {
		if src.InFlight != nil {
			ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(src.InFlight(st.Name)), st.Name)
		}
		for _, s := range states {
			v := 0.0
			if st.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, st.Name, string(s))
		}
		ch <- prometheus.MustNewConstMetric(descReplicas, prometheus.GaugeValue, float64(st.Replicas), st.Name)
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, float64(st.Ready), st.Name)
		for _, is := range st.Instances {
			ch <- prometheus.MustNewConstMetric(descInstanceRestarts, prometheus.GaugeValue, float64(is.Restarts), st.Name, strconv.Itoa(is.Replica))
		}
		for _, s := range instanceStates {
			n := 0
			for _, is := range st.Instances {
				if is.State == s {
					n++
				}
			}
			ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(n), st.Name, string(s))
		}
	}
}
