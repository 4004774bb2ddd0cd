package main

import (
	"fmt"
	"strings"
	"sync"
)

// rssTable collects the runner's VmRSS readings of the other sections.
type rssTable struct {
	mu    sync.Mutex
	rows  []rssRow
	peaks map[string][]rssPeak // reach mode → peaks under each request of section 1
}

type rssRow struct {
	what    string
	plugins int
	rss     int64
	note    string
}

type rssPeak struct {
	request string
	rss     int64
}

func (t *rssTable) add(what string, plugins int, rss int64, note string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows = append(t.rows, rssRow{what, plugins, rss, note})
}

func (t *rssTable) loadPeak(mode, request string, rss int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.peaks == nil {
		t.peaks = map[string][]rssPeak{}
	}
	t.peaks[mode] = append(t.peaks[mode], rssPeak{request, rss})
}

func (t *rssTable) render() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var rows, more []rssRow // 1 plugin idle, then under load, then more plugins
	for _, r := range t.rows {
		if r.plugins == 1 {
			rows = append(rows, r)
		} else {
			more = append(more, r)
		}
	}
	for _, mode := range []string{"published", "address"} {
		peaks := t.peaks[mode]
		if len(peaks) == 0 {
			continue
		}
		var top int64
		var each []string
		for _, p := range peaks {
			top = max(top, p.rss)
			each = append(each, fmt.Sprintf("%s: %s", p.request, mib(p.rss)))
		}
		rows = append(rows, rssRow{fmt.Sprintf("under the load of section 1, reach = %q (peak)", mode), 1, top, strings.Join(each, "; ")})
	}
	rows = append(rows, more...)
	if len(rows) == 0 {
		return "Not measured: the sections that read it (1, 4 and 6) did not run.\n"
	}
	var b strings.Builder
	b.WriteString("| runner | plugins | VmRSS | note |\n|---|---:|---:|---|\n")
	var goal string
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", r.what, r.plugins, mib(r.rss), r.note)
		if r.plugins == 50 && strings.HasPrefix(r.what, "idle") {
			goal = fmt.Sprintf("\nGoal (issue 9): ≤ 40 MiB with 50 plugins: %s (%s).\n", metOrMissed(r.rss <= 40<<20), mib(r.rss))
		}
	}
	b.WriteString(goal)
	fmt.Fprintf(&b, `
VmRSS of the runner process from /proc/<pid>/status: idle readings %s after the last
request (1 plugin: after the first 200, section 1; more plugins: after every plugin
answered 200, sections 4 and 6 — in section 6 after a further %s of idle CPU reading);
under load, the peak of readings every 100 ms during the runner's load runs of section 1.
Docker's docker-proxy processes (one per published port) are not counted here.
`, idleSettle, idleCPUFor)
	return b.String()
}
