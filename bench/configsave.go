package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

const oldGoneWithin = 30 * time.Second

var configEdits = 10 // -smoke: fewer

// configSection: config save → new generation serving, over configEdits edits, each
// followed by one floor run (create + start + first 200 of the same image), so that both
// see the same host. If the budget runs out, the pairs measured so far are reported.
func configSection(ctx context.Context, e *env) (string, error) {
	var edits, floor []time.Duration
	err := configRuns(ctx, e, &edits, &floor)
	if len(edits) == 0 || len(floor) == 0 {
		return "", err
	}
	slices.Sort(edits)
	slices.Sort(floor)
	var b strings.Builder
	b.WriteString("| what | runs | median | p95 | min | max |\n|---|---:|---:|---:|---:|---:|\n")
	row := func(name string, d []time.Duration) {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", name, len(d), ms(quantile(d, 0.5)), ms(quantile(d, 0.95)), ms(d[0]), ms(d[len(d)-1]))
	}
	row("**runner**: config save → new generation serving", edits)
	row("floor: create + start + first 200 (Engine API)", floor)
	em, fm := quantile(edits, 0.5), quantile(floor, 0.5)
	fmt.Fprintf(&b, "\nRunner/floor: median %s× (%s added), p95 %s×. Goal (issue 9): median ≤ floor + 500 ms: %s.\n",
		ratio(float64(em), float64(fm)), signedMS(em-fm), ratio(float64(quantile(edits, 0.95)), float64(quantile(floor, 0.95))),
		metOrMissed(em <= fm+500*time.Millisecond))
	fmt.Fprintf(&b, `
Runner: `+"`runner up`"+` with watch = true, hello (reach = "published", health { path =
"/healthz" }); each edit is an atomic rewrite (temp file + rename) of plugins.hcl with a
new GREETING, timed from the rename to the first answer carrying the new greeting at
/plugins/hello/ (a GET every 5 ms, new connection each). That includes the config
watcher's debounce, the image resolve, create, start, the health probe and the route swap.
After each edit the bench waits until the old generation is removed (drain_timeout %s),
then measures one floor run: the same image with the same limits and hardening
(sandbox/spec.go) and `+"`-p 127.0.0.1::8080`"+`, on Docker's default bridge, created, started and
inspected over the Engine API (the calls `+"`docker create`/`docker start`"+` make, without the
CLI's process start), timed to the first 200 at its published port (same 5 ms polling),
then removed. Edits and floor runs alternate, so both see the same host. p95 is the
nearest-rank value (of %d runs: the maximum).
`, drainTimeout, len(edits))
	return b.String(), err
}

// configRuns appends to edits and floor until configEdits pairs are measured or an error
// (the budget's end included) stops it.
func configRuns(ctx context.Context, e *env, edits, floor *[]time.Duration) (err error) {
	api, err := newEngineAPI()
	if err != nil {
		return err
	}
	defer removeByLabel()
	conf := func(g string) string { return runnerConfig(e.image, "", "", pluginConf{name: "hello", greeting: g}) }
	p, err := startRunner(ctx, e.bin, conf("e0"), runnerStartIn)
	if err != nil {
		return err
	}
	defer func() { err = p.finish(err) }()
	client := pollClient()
	url := p.url("hello")
	if _, err := waitStatus200(ctx, client, url, "e0 from hello\n", answerWithin); err != nil {
		return err
	}
	for i := 1; i <= configEdits; i++ {
		g := fmt.Sprintf("e%d", i)
		if err := writeAtomic(p.cfg, conf(g)); err != nil {
			return err
		}
		saved := time.Now()
		at, err := waitStatus200(ctx, client, url, g+" from hello\n", answerWithin)
		if err != nil {
			return fmt.Errorf("edit %d: %w", i, err)
		}
		edit := at.Sub(saved)
		// Let the old generation drain and go: the next run starts from one container.
		deadline := time.Now().Add(oldGoneWithin)
		for {
			ids, err := p.containers(ctx, "hello")
			if err != nil {
				return err
			}
			if len(ids) <= 1 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("edit %d: old generation still running %s later", i, oldGoneWithin)
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
		fl, err := floorOnce(ctx, api, e.image, fmt.Sprintf("f%d", i), client)
		if err != nil {
			return fmt.Errorf("floor %d: %w", i, err)
		}
		*edits, *floor = append(*edits, edit), append(*floor, fl)
		progress("  %2d: config save → new generation serving %s; floor %s", i, ms(edit), ms(fl))
	}
	return nil
}

// floorOnce: create + start + inspect over the Engine API, then the first 200; removed after.
func floorOnce(ctx context.Context, api *engineAPI, image, greeting string, client *http.Client) (time.Duration, error) {
	begin := time.Now()
	id, addr, err := api.rawRun(ctx, image, "hello", greeting)
	if id != "" {
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = api.remove(rctx, id)
		}()
	}
	if err != nil {
		return 0, err
	}
	at, err := waitStatus200(ctx, client, "http://"+addr+"/", greeting+" from hello\n", answerWithin)
	if err != nil {
		return 0, err
	}
	return at.Sub(begin), nil
}

// quantile of sorted d, nearest rank.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d))*q+0.999999) - 1
	return d[min(max(i, 0), len(d)-1)]
}
