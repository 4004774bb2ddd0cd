package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// browser is a headless Chromium driven over the DevTools protocol, for what a
// one-shot `chromium --dump-dom` cannot see: a page some seconds after it loaded (its
// script polled and redrew, server-sent events arrived). The protocol runs over
// --remote-debugging-pipe (fd 3: commands to the browser, fd 4: its answers and events,
// JSON messages each ended by a NUL byte): no port, nothing that another process on
// the host could reach.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	toB     *os.File // the browser's fd 3
	fromB   *os.File // the browser's fd 4
	rd      *bufio.Reader
	next    int
	session string
	stderr  bytes.Buffer
}

// openBrowser starts chromium with a fresh profile and no traffic of its own (see
// headless), opens a tab of width×height and attaches to it. The browser is stopped
// when the test ends.
func openBrowser(t *testing.T, bin string, width, height int) *browser {
	t.Helper()
	cmdR, cmdW, err := os.Pipe() // we write commands, the browser reads them on fd 3
	if err != nil {
		t.Fatal(err)
	}
	evR, evW, err := os.Pipe() // the browser writes on fd 4, we read
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	b := &browser{t: t, toB: cmdW, fromB: evR, rd: bufio.NewReader(evR)}
	b.cmd = exec.CommandContext(ctx, bin, append(chromiumFlags(t), "--remote-debugging-pipe")...)
	b.cmd.ExtraFiles = []*os.File{cmdR, evW}
	b.cmd.Stderr = &b.stderr
	if err := b.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start chromium: %v", err)
	}
	cmdR.Close()
	evW.Close()
	t.Cleanup(func() {
		b.toB.Close() // the browser exits when its command pipe closes
		done := make(chan struct{})
		go func() { _ = b.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
		}
		cancel()
		b.fromB.Close()
	})

	var target struct {
		TargetID string `json:"targetId"`
	}
	b.call("Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	b.call("Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	b.session = attached.SessionID
	b.resize(width, height)
	b.call("Page.enable", nil, nil)
	return b
}

// resize sets the tab's viewport.
func (b *browser) resize(width, height int) {
	b.t.Helper()
	b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
}

// call sends a command (to the attached tab once there is one) and decodes its result
// into result (if not nil); events and answers to nothing we wait for are skipped.
func (b *browser) call(method string, params any, result any) {
	b.t.Helper()
	b.next++
	msg := map[string]any{"id": b.next, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if b.session != "" {
		msg["sessionId"] = b.session
	}
	body, err := json.Marshal(msg)
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.toB.Write(append(body, 0)); err != nil {
		b.t.Fatalf("chromium %s: %v\n%s", method, err, b.stderr.String())
	}
	_ = b.fromB.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		raw, err := b.rd.ReadBytes(0)
		if err != nil {
			b.t.Fatalf("chromium %s: no answer: %v\n%s", method, err, b.stderr.String())
		}
		var ans struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(raw[:len(raw)-1], &ans); err != nil {
			b.t.Fatalf("chromium %s: %v: %q", method, err, raw)
		}
		if ans.ID != b.next {
			continue // an event
		}
		if ans.Error != nil {
			b.t.Fatalf("chromium %s: %s", method, ans.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(ans.Result, result); err != nil {
				b.t.Fatalf("chromium %s: %v: %s", method, err, ans.Result)
			}
		}
		return
	}
}

// navigate opens url in the tab and waits until its document has loaded.
func (b *browser) navigate(url string) {
	b.t.Helper()
	b.call("Page.navigate", map[string]any{"url": url}, nil)
	b.waitFor(30*time.Second, "the page to load", `document.readyState === "complete" && location.href !== "about:blank"`)
}

// eval evaluates a JavaScript expression in the page and decodes its value into out.
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res)
	if res.ExceptionDetails != nil {
		b.t.Fatalf("evaluate %s: %s %s", expr, res.ExceptionDetails.Text, res.ExceptionDetails.Exception.Description)
	}
	if err := json.Unmarshal(res.Result.Value, out); err != nil {
		b.t.Fatalf("evaluate %s: %v: %s", expr, err, res.Result.Value)
	}
}

// waitFor polls a boolean expression every 100ms until it is true.
func (b *browser) waitFor(within time.Duration, what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var ok bool
		b.eval("!!("+expr+")", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out after %s waiting for %s (%s)", within, what, expr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot is a PNG of the tab's viewport, once no animation runs (a row that was
// just updated flashes).
func (b *browser) screenshot() []byte {
	b.t.Helper()
	b.waitFor(10*time.Second, "animations to end", `document.getAnimations().length === 0`)
	var res struct {
		Data string `json:"data"`
	}
	b.call("Page.captureScreenshot", map[string]any{"format": "png"}, &res)
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10_000 {
		b.t.Fatalf("screenshot: %d bytes, not a PNG of a page", len(png))
	}
	return png
}

func (b *browser) String() string { return fmt.Sprintf("chromium pid %d", b.cmd.Process.Pid) }
