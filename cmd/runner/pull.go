package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-units"

	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/runner/admin"
)

// pullTimeout bounds `runner pull`: it waits for the pulls it asked for.
const pullTimeout = 30 * time.Minute

func cmdPull(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlagsArgs("pull", " [plugin...]", "Make the running runner pull the images of the named plugins now (all plugins\nwith a registry image when none is named), even those it has, and print what\nchanged. A plugin whose image changed is replaced start-first.", stderr)
	af := addAdminFlags(fs, cfgPath)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := af.client(stderr)
	if err != nil {
		return err
	}
	ctx, stop := interruptible()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	body, _ := json.Marshal(admin.PullRequest{Plugins: pos})
	resp, err := c.do(ctx, http.MethodPost, "/v1/pull", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return problemError(resp)
	}
	var res []runner.PullResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return fmt.Errorf("decode pull result: %w", err)
	}
	failed := false
	for _, r := range res {
		fmt.Fprintln(stdout, pullLine(r))
		failed = failed || r.Error != ""
	}
	if len(res) == 0 {
		fmt.Fprintln(stdout, "no plugin pulls its image from a registry")
	}
	if failed {
		return errReported
	}
	return nil
}

// pullLine says what `runner pull` did for one image.
func pullLine(r runner.PullResult) string {
	who := strings.Join(r.Plugins, ",")
	switch {
	case r.Error != "":
		return fmt.Sprintf("FAILED     %s  %s: %s", who, r.Image, r.Error)
	case r.Changed && r.Before == "":
		return fmt.Sprintf("pulled     %s  %s %s", who, r.Image, r.After)
	case r.Changed:
		return fmt.Sprintf("changed    %s  %s %s → %s (replacing start-first)", who, r.Image, short(r.Before), short(r.After))
	}
	return fmt.Sprintf("unchanged  %s  %s %s", who, r.Image, short(r.After))
}

func short(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return "sha256:" + h[:12]
	}
	return d
}

// pullPrinter shows `runner up`'s pulls: on a terminal one live line, rewritten in
// place; otherwise a line every few seconds; and each pull's end with its digest.
type pullPrinter struct {
	w      io.Writer
	mu     *sync.Mutex // shared with the status lines
	tty    bool
	pulls  func() []runner.PlugPull
	every  time.Duration
	live   bool // a live line is on screen
	stopCh chan struct{}
	wg     sync.WaitGroup
}

// printPulls prints what events says of pulls until stop is called. Progress is read
// from pulls (the runner's), only while a pull is under way.
func printPulls(w io.Writer, mu *sync.Mutex, tty bool, events <-chan runner.Event, pulls func() []runner.PlugPull) (stop func()) {
	p := &pullPrinter{w: w, mu: mu, tty: tty, pulls: pulls, every: 5 * time.Second, stopCh: make(chan struct{})}
	if tty {
		p.every = 200 * time.Millisecond
	}
	p.wg.Go(func() { p.run(events) })
	return func() {
		close(p.stopCh)
		p.wg.Wait()
	}
}

func (p *pullPrinter) run(events <-chan runner.Event) {
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		select {
		case <-p.stopCh:
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			switch ev.Type {
			case runner.EventPullStarted:
				if ticker == nil {
					ticker = time.NewTicker(p.every)
					tick = ticker.C
				}
			case runner.EventPullDone:
				p.line(fmt.Sprintf("pulled\t%s\t%s\t%s\t%s in %s", ev.Plugin, ev.Image, ev.Digest, units.BytesSize(float64(ev.Bytes)), ev.Duration.Round(time.Millisecond)))
			case runner.EventPullFailed:
				p.line(fmt.Sprintf("PULL FAILED\t%s\t%s\t%s", ev.Plugin, ev.Image, ev.Message))
			case runner.EventRegistryMoved:
				p.line(fmt.Sprintf("moved\t%s\t%s", ev.Plugin, ev.Reason))
			}
		case <-tick:
			list := p.pulls()
			if len(list) == 0 {
				ticker.Stop()
				ticker, tick = nil, nil
				p.clearLive()
				continue
			}
			p.progress(list)
		}
	}
}

// progress shows the pulls under way: one live line on a terminal, a line otherwise.
func (p *pullPrinter) progress(list []runner.PlugPull) {
	sort.Slice(list, func(i, j int) bool { return list[i].Plugin < list[j].Plugin })
	parts := make([]string, len(list))
	for i, pp := range list {
		parts[i] = fmt.Sprintf("%s %d%%", pp.Plugin, pp.Percent)
		if pp.Total > 0 {
			parts[i] += fmt.Sprintf(" (%s/%s)", units.BytesSize(float64(pp.Done)), units.BytesSize(float64(pp.Total)))
		}
	}
	text := "pulling  " + strings.Join(parts, " · ")
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", text)
		p.live = true
		return
	}
	fmt.Fprintln(p.w, text)
}

func (p *pullPrinter) clearLive() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
		p.live = false
	}
}

// line prints a whole line (tab-separated fields, aligned by two spaces).
func (p *pullPrinter) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
		p.live = false
	}
	fmt.Fprintln(p.w, strings.ReplaceAll(s, "\t", "  "))
}
