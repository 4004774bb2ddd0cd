package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/xcore/runner/runner"
)

// logs streams a plugin's container log as text/plain: ?tail=N lines of the past
// (default: all), then with ?follow=1 whatever comes until the client goes away. A
// followed log carries on with the next container when the plugin is replaced or
// restarted, each line prefixed with its generation ("[gen 3] "). ?previous=1 is the
// end of the log of the plugin's last removed container (a crash, a replacement).
func (s *server) logs(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	q := r.URL.Query()
	if truthy(q.Get("previous")) {
		s.previousLogs(w, name)
		return
	}
	follow := truthy(q.Get("follow"))
	tail := -1
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeProblem(w, http.StatusBadRequest, "tail must be a number of lines ≥ 0, not "+quote(v))
			return
		}
		tail = n
	}
	var events <-chan runner.Event
	if follow { // subscribe before looking, so no replacement falls between the two
		ch, unsubscribe := s.rt.Subscribe()
		defer unsubscribe()
		events = ch
	}
	st, ok := s.status(w, name)
	if !ok {
		return
	}
	if st.Container == "" {
		writeProblem(w, http.StatusConflict, fmt.Sprintf("no container runs for plugin %s (state %s)", quote(name), st.State))
		return
	}
	ctx := r.Context()
	rc, err := s.rt.Logs(ctx, name, follow, tail)
	if err != nil {
		if errors.Is(err, runner.ErrUnknownPlugin) {
			writeProblem(w, http.StatusNotFound, "unknown plugin "+quote(name))
			return
		}
		writeProblem(w, http.StatusBadGateway, err.Error())
		return
	}
	textHeaders(w)
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fl := http.NewResponseController(w)
	_ = fl.Flush()

	container := st.Container
	out := io.Writer(w)
	var pw *prefixWriter
	if follow {
		pw = &prefixWriter{w: w, prefix: genPrefix(st.Generation), bol: true}
		out = pw
	}
	for {
		err := copyFlushing(out, fl, rc, follow)
		rc.Close()
		if err != nil || !follow || ctx.Err() != nil {
			return
		}
		// The container's log ended: it stopped. Follow its successor, if one comes.
		next, gen, ok := s.nextContainer(ctx, name, container, events)
		if !ok {
			return
		}
		container = next
		pw.prefix = genPrefix(gen)
		if rc, err = s.rt.Logs(ctx, name, true, -1); err != nil {
			return
		}
	}
}

// previousLogs answers the end of the log of the plugin's last removed container.
func (s *server) previousLogs(w http.ResponseWriter, name string) {
	p, err := s.rt.PreviousLogs(name)
	switch {
	case errors.Is(err, runner.ErrUnknownPlugin):
		writeProblem(w, http.StatusNotFound, "unknown plugin "+quote(name))
		return
	case err != nil:
		writeProblem(w, http.StatusNotFound, err.Error())
		return
	}
	textHeaders(w)
	fmt.Fprintf(w, "# %s (generation %d), removed %s; its last lines:\n", p.Container, p.Generation, p.Removed.UTC().Format(time.RFC3339))
	_, _ = io.WriteString(w, p.Text)
}

// textHeaders are the headers of a log: plain text, never cached or sniffed.
func textHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
}

func genPrefix(gen int) []byte { return []byte(fmt.Sprintf("[gen %d] ", gen)) }

// prefixWriter writes prefix at the beginning of every line.
type prefixWriter struct {
	w      io.Writer
	prefix []byte
	bol    bool // at the beginning of a line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if p.bol {
			if _, err := p.w.Write(p.prefix); err != nil {
				return n, err
			}
			p.bol = false
		}
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, p.bol = b[:i+1], true
		}
		m, err := p.w.Write(line)
		n += m
		if err != nil {
			return n, err
		}
		b = b[len(line):]
	}
	return n, nil
}

// copyFlushing copies src to w, flushing after each chunk when streaming. It returns
// nil at the end of src and the error of a failed write (the client went away).
func copyFlushing(w io.Writer, fl *http.ResponseController, src io.Reader, stream bool) error {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if stream {
				if err := fl.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr != nil {
			return nil // EOF, or the stream broke: either way this log is over
		}
	}
}

// nextContainer waits until plugin name is served by a container other than prev, and
// returns it with its generation.
func (s *server) nextContainer(ctx context.Context, name, prev string, events <-chan runner.Event) (string, int, bool) {
	// A slow subscriber may lose events: look again now and then as well.
	recheck := time.NewTicker(2 * time.Second)
	defer recheck.Stop()
	for {
		st, err := s.rt.Status(name)
		if err != nil {
			return "", 0, false // the plugin was removed
		}
		if st.Container != "" && st.Container != prev {
			return st.Container, st.Generation, true
		}
		select {
		case <-ctx.Done():
			return "", 0, false
		case _, ok := <-events:
			if !ok {
				return "", 0, false
			}
		case <-recheck.C:
		}
	}
}

// events is a server-sent event stream: one `data: <JSON runner.Event>` message per
// event, a comment line every heartbeat, until the client goes away.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	ch, unsubscribe := s.rt.Subscribe()
	defer unsubscribe()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fl := http.NewResponseController(w)
	// The subscription is live from here on: a client that has read this line sees
	// every later event.
	if _, err := io.WriteString(w, "retry: 2000\n: connected\n\n"); err != nil {
		return
	}
	if fl.Flush() != nil {
		return
	}
	beat := time.NewTicker(s.heartbeat)
	defer beat.Stop()
	ctx := r.Context()
	for {
		var msg []byte
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			b, err := json.Marshal(NewEvent(ev))
			if err != nil {
				s.log.Warn("admin: encode event", "err", err)
				continue
			}
			msg = fmt.Appendf(nil, "data: %s\n\n", b)
		case <-beat.C:
			msg = []byte(": heartbeat\n\n")
		}
		if _, err := w.Write(msg); err != nil {
			return
		}
		if fl.Flush() != nil {
			return
		}
	}
}

func truthy(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && b
}
