package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Streaming (SSE) time-to-first-byte, part of section 1: hello's GET /events streams
// sseEvents server-sent events, the first flushed at once and the next ones sseEvery
// apart, so a proxy that buffers the stream shows a time-to-first-byte of at least the
// stream's length ((sseEvents-1)×sseEvery) instead of a fraction of a millisecond.
const (
	sseEvents    = 3
	sseEvery     = 5 * time.Millisecond
	sseWarmUp    = 5 // requests before the measured ones (connection, pools)
	sseTimeout   = 10 * time.Second
	sseReadLimit = 64 << 10
)

var (
	ssePath     = fmt.Sprintf("events?n=%d&every=%s", sseEvents, sseEvery)
	sseRequests = 200 // measured requests per target (-smoke: fewer)
)

type sseRow struct {
	mode, target string
	res          *sseResult
}

type sseResult struct {
	requests      int
	p50, p99, max time.Duration // time to first byte
	whole         time.Duration // p50 of request → end of stream
}

// sseTTFB sends n sequential GET /events through one keep-alive connection and measures
// each one's time from sending the request to the first byte of the body (the first
// event; its headers come in the same flush), and to the end of the stream. Every answer
// must be 200, text/event-stream, with sseEvents events.
func sseTTFB(ctx context.Context, base string, n int) (*sseResult, error) {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := base + ssePath
	var ttfb, whole []time.Duration
	for i := range sseWarmUp + n {
		first, all, err := sseOnce(ctx, client, url)
		if err != nil {
			return nil, fmt.Errorf("GET %s (request %d): %w", url, i+1, err)
		}
		if i >= sseWarmUp {
			ttfb, whole = append(ttfb, first), append(whole, all)
		}
	}
	slices.Sort(ttfb)
	slices.Sort(whole)
	return &sseResult{requests: n, p50: quantile(ttfb, 0.5), p99: quantile(ttfb, 0.99), max: ttfb[len(ttfb)-1],
		whole: quantile(whole, 0.5)}, nil
}

func sseOnce(ctx context.Context, client *http.Client, url string) (first, all time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, sseTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	begin := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(io.LimitReader(resp.Body, sseReadLimit))
	if _, err := rd.Peek(1); err != nil {
		return 0, 0, fmt.Errorf("status %d, first byte: %w", resp.StatusCode, err)
	}
	first = time.Since(begin)
	body, err := io.ReadAll(rd)
	all = time.Since(begin)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("status %d: %.200q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return 0, 0, fmt.Errorf("Content-Type %q, want text/event-stream (an hello image without /events? make images)", ct)
	}
	if got := bytes.Count(body, []byte("\n\n")); got != sseEvents {
		return 0, 0, fmt.Errorf("%d events, want %d: %.300q", got, sseEvents, body)
	}
	return first, all, nil
}

func renderSSE(rows []sseRow, t *tools) string {
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n### Streaming (SSE) time-to-first-byte\n\n")
	b.WriteString("| reach | target | requests | TTFB p50 | TTFB p99 | TTFB max | whole stream p50 | runner/direct (p50) | runner/nginx (p50) |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	find := func(mode, target string) *sseRow {
		return findRow(rows, func(r sseRow) bool { return r.mode == mode && r.target == target })
	}
	for _, r := range rows {
		vsDirect, vsNginx := "", ""
		if r.target == "runner" {
			if d := find(r.mode, "direct"); d != nil {
				vsDirect = ratio(float64(r.res.p50), float64(d.res.p50)) + "×"
			}
			vsNginx = "skipped"
			if n := find(r.mode, "nginx"); n != nil {
				vsNginx = ratio(float64(r.res.p50), float64(n.res.p50)) + "×"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", r.mode, targetLabel(r.target), r.res.requests,
			ms(r.res.p50), ms(r.res.p99), ms(r.res.max), ms(r.res.whole), vsDirect, vsNginx)
		if r.target == "runner" && t.nginx == "" {
			fmt.Fprintf(&b, "| %s | nginx | skipped: %s | | | | | | |\n", r.mode, t.nginxSkip)
		}
	}
	streamLen := time.Duration(sseEvents-1) * sseEvery
	b.WriteString("\nGoals (issue 9's added-p99 goal applied to the first byte): the runner streams (TTFB p50 well under the stream's " +
		ms(streamLen) + "), and its TTFB p99 added over direct ≤ nginx's.\n")
	for _, mode := range []string{"published", "address"} {
		d, r, n := find(mode, "direct"), find(mode, "runner"), find(mode, "nginx")
		if r == nil {
			continue
		}
		line := fmt.Sprintf("- reach = %q: runner streams: %s (TTFB p50 %s vs stream %s)", mode,
			metOrMissed(r.res.p50 < streamLen/2), ms(r.res.p50), ms(streamLen))
		switch {
		case d != nil && n != nil:
			addR, addN := r.res.p99-d.res.p99, n.res.p99-d.res.p99
			line += fmt.Sprintf("; added TTFB p99 runner %s vs nginx %s (%s)", signedMS(addR), signedMS(addN), metOrMissed(addR <= addN))
		case n == nil:
			line += "; nginx skipped: " + t.nginxSkip
		}
		b.WriteString(line + ".\n")
	}
	fmt.Fprintf(&b, `
GET /plugins/hello/%s: hello's /events writes %d server-sent events, the first
flushed at once, then one every %s, with X-Accel-Buffering: no (nginx then passes the
stream unbuffered). Per target, %d warm-up requests then %d sequential ones on one
keep-alive connection (a Go client, one request at a time, so no load: latency only).
TTFB is from sending the request to the first body byte (the first event; the headers
come in the same write); "whole stream" to the end of the last event. A proxy that
buffered the stream would show a TTFB of at least %s.
`, ssePath, sseEvents, sseEvery, sseWarmUp, sseRequests, ms(streamLen))
	return b.String()
}
