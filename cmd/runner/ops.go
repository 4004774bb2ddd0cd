package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/runner/admin"
)

// requestTimeout bounds the admin requests that are not streams.
const requestTimeout = time.Minute

func cmdPs(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("ps", "List the plugins of a running runner: state, generation, uptime, restarts,\nimage and last error.", stderr)
	af := addAdminFlags(fs, cfgPath)
	asJSON := fs.Bool("json", false, "print the admin API's JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := af.client(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var list []admin.PluginStatus
	if err := c.getJSON(ctx, "/v1/plugins", &list); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	st := make([]runner.Status, len(list))
	for i, p := range list {
		st[i] = p.Status
	}
	printPs(stdout, st, time.Now())
	var info admin.Info
	if err := c.getJSON(ctx, "/v1/runner", &info); err != nil {
		return err
	}
	if info.HostProtection != nil {
		fmt.Fprintln(stdout, protectionLine(info.HostProtection))
	}
	return nil
}

func printPs(w io.Writer, list []runner.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tREADY\tGEN\tUPTIME\tRESTARTS\tIMAGE\tLAST ERROR")
	for _, s := range list {
		up := "-"
		if d, ok := admin.Uptime(s, now); ok {
			up = admin.HumanDuration(d)
		}
		gen := "-"
		if s.Generation > 0 {
			gen = fmt.Sprint(s.Generation)
		}
		image := s.Image
		if image == "" {
			image = "-"
		}
		ready := "-"
		if s.Replicas > 0 {
			ready = fmt.Sprintf("%d/%d", s.Ready, s.Replicas)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, psState(s), ready, gen, up, s.Restarts, image, oneLine(s.LastError))
	}
	tw.Flush()
}

// psState is the STATE column: "pulling 43%" while the plugin waits for its image,
// "healthy, pulling 43%" while the next image of a moved tag comes.
func psState(s runner.Status) string {
	switch {
	case s.Pull == nil:
		return string(s.State)
	case s.State == runner.StatePulling:
		return fmt.Sprintf("pulling %d%%", s.Pull.Percent)
	}
	return fmt.Sprintf("%s, pulling %d%%", s.State, s.Pull.Percent)
}

// oneLine keeps a table row on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("reload", "Make the running runner read its config files again and apply them (like\nSIGHUP). Prints the plan applied, or the config's diagnostics and exits 1\nwhen it is invalid: then nothing changes.", stderr)
	af := addAdminFlags(fs, cfgPath)
	af.quiet = true
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := af.client(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, "/v1/reload", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnprocessableEntity {
		return problemError(resp)
	}
	var res runner.ReloadResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return fmt.Errorf("decode reload result: %w", err)
	}
	if !res.Applied {
		for _, d := range res.Diagnostics {
			fmt.Fprintln(stderr, d)
		}
		fmt.Fprintln(stderr, "config rejected; nothing changed")
		return errReported
	}
	fmt.Fprint(stdout, res.Plan)
	if res.Plan != "" && !strings.HasSuffix(res.Plan, "\n") {
		fmt.Fprintln(stdout)
	}
	if res.Changes {
		fmt.Fprintln(stdout, "applying (follow with `runner events`)")
	} else {
		fmt.Fprintln(stdout, "no changes")
	}
	if len(res.Errors) > 0 {
		// The rest applies; these plugins keep what runs (or stay failed) until fixed.
		for _, e := range res.Errors {
			fmt.Fprintln(stderr, "cannot apply:", e)
		}
		return errReported
	}
	return nil
}

func cmdRestart(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlagsArgs("restart", " <plugin>", "Replace a plugin's container by a fresh one of the same spec, start-first: the\nnew container serves before the old one stops. A failed plugin starts again\nwith a fresh restart budget.", stderr)
	af := addAdminFlags(fs, cfgPath)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(fs, pos, 1, 1); err != nil {
		return err
	}
	c, err := af.client(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, "/v1/plugins/"+url.PathEscape(pos[0])+"/restart", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return problemError(resp)
	}
	fmt.Fprintf(stdout, "restarting %s: a fresh container replaces the current one start-first\n", pos[0])
	return nil
}
