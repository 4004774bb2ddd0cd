package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-units"

	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/runner/admin"
)

// interruptible is a context that ends on Ctrl-C or SIGTERM: a stream the user stops
// is a success.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func cmdLogs(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlagsArgs("logs", " <plugin>", "Print the log (stdout and stderr) of a plugin's serving container. With -f,\nkeep printing, across replacements and restarts (each line prefixed with its\ngeneration), until Ctrl-C. With --previous, the last lines of the container the\nrunner removed last (after a crash, a failed health check, a replacement).", stderr)
	af := addAdminFlags(fs, cfgPath)
	follow := fs.Bool("f", false, "follow: keep printing new lines")
	fs.BoolVar(follow, "follow", false, "same as -f")
	tail := fs.Int("tail", -1, "print only the last `N` lines first (-1: all)")
	previous := fs.Bool("previous", false, "print the end of the log of the plugin's last removed container (after a crash or a replacement)")
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
	ctx, stop := interruptible()
	defer stop()
	q := url.Values{}
	if *follow {
		q.Set("follow", "1")
	}
	if *tail >= 0 {
		q.Set("tail", strconv.Itoa(*tail))
	}
	if *previous {
		q = url.Values{"previous": {"1"}}
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/plugins/"+url.PathEscape(pos[0])+"/logs?"+q.Encode(), nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return problemError(resp)
	}
	_, err = io.Copy(stdout, resp.Body)
	if ctx.Err() != nil {
		return nil // Ctrl-C
	}
	if err != nil {
		return fmt.Errorf("log stream ended: the runner stopped or went away (%w)", err)
	}
	return nil
}

func cmdEvents(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("events", "Print what happens in the running runner, one line per event, until Ctrl-C:\nstate changes, replacements (with their reason), crashes, restarts, failed\nprobes and config reloads.", stderr)
	af := addAdminFlags(fs, cfgPath)
	asJSON := fs.Bool("json", false, "print each event as the admin API's JSON, one per line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := af.client(stderr)
	if err != nil {
		return err
	}
	ctx, stop := interruptible()
	defer stop()
	resp, err := c.do(ctx, http.MethodGet, "/v1/events", nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return problemError(resp)
	}
	// The server subscribes before it answers: from here on no event is missed.
	fmt.Fprintf(stderr, "connected to %s; Ctrl-C to stop\n", c.base)
	// Server-sent events: "data: <json>" lines, blank lines between events, ":" comments.
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if *asJSON {
			fmt.Fprintln(stdout, data)
			continue
		}
		var ev admin.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			fmt.Fprintln(stderr, "runner events: undecodable event:", data)
			continue
		}
		fmt.Fprintln(stdout, formatEvent(runnerEvent(ev)))
	}
	if ctx.Err() != nil {
		return nil // Ctrl-C
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event stream ended: the runner stopped or went away (%w)", err)
	}
	return errors.New("event stream ended: the runner stopped")
}

// runnerEvent is the runner's event behind the API's view of it.
func runnerEvent(ev admin.Event) runner.Event {
	out := ev.Event
	out.Duration = time.Duration(ev.DurationMS) * time.Millisecond
	out.Status = nil
	if ev.Status != nil {
		st := ev.Status.Status
		st.Took = time.Duration(ev.Status.TookMS) * time.Millisecond
		out.Status = &st
	}
	return out
}

// formatEvent is one line: time, type, plugin, what happened.
func formatEvent(ev runner.Event) string {
	var what string
	switch ev.Type {
	case runner.EventState:
		if s := ev.Status; s != nil {
			what = string(s.State)
			if s.Generation > 0 {
				what += fmt.Sprintf(" generation=%d", s.Generation)
			}
			if s.State == runner.StateFailed && s.LastError != "" {
				what += ": " + s.LastError
			}
		}
	case runner.EventReplacing:
		what = "reason: " + ev.Reason
	case runner.EventReplaced:
		what = fmt.Sprintf("in %s, reason: %s", ev.Duration.Round(time.Millisecond), ev.Reason)
	case runner.EventCrash:
		what = ev.Reason
	case runner.EventRestart:
		what = "a fresh container serves after a crash"
	case runner.EventReload:
		what = ev.Message
	case runner.EventPullStarted:
		what = ev.Image + " (" + ev.Reason + ")"
	case runner.EventPullDone:
		what = fmt.Sprintf("%s %s, %s in %s", ev.Image, ev.Digest, units.BytesSize(float64(ev.Bytes)), ev.Duration.Round(time.Millisecond))
	case runner.EventPullFailed:
		what = ev.Image + ": " + ev.Message
	case runner.EventRegistryMoved:
		what = ev.Reason
	default:
		what = ev.Message
		if what == "" {
			what = ev.Reason
		}
	}
	plugin := ev.Plugin
	if plugin == "" {
		plugin = "-"
	}
	return strings.TrimRight(fmt.Sprintf("%s  %-14s %-12s %s", ev.Time.Local().Format("15:04:05.000"), ev.Type, plugin, oneLine(what)), " ")
}
