package integration

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var adminRE = regexp.MustCompile(`(?m)^admin (http://[0-9.:]+)/ \(token in (.+)\)$`)

// adminAPI is a runner's admin API as `runner up` announced it.
type adminAPI struct {
	url       string // http://127.0.0.1:PORT
	tokenFile string
	token     string
}

// adminAPI parses the "admin http://... (token in FILE)" line (printed before the
// "serving" line) and reads the token.
func (rp *runnerProc) adminAPI(t *testing.T) adminAPI {
	t.Helper()
	m := adminRE.FindStringSubmatch(rp.out())
	if m == nil {
		t.Fatalf("no admin line in the runner's output:\n%s", rp.out())
	}
	tok, err := os.ReadFile(m[2])
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	if st, err := os.Stat(m[2]); err != nil {
		t.Fatal(err)
	} else if perm := st.Mode().Perm(); perm != 0o600 {
		t.Fatalf("admin token file %s has mode %04o, want 0600", m[2], perm)
	}
	return adminAPI{url: m[1], tokenFile: m[2], token: strings.TrimSpace(string(tok))}
}

// request sends an authenticated request to the admin API.
func (a adminAPI) request(t *testing.T, method, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, a.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// metrics scrapes /metrics and parses it with the Prometheus text parser.
func (a adminAPI) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", a.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
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

// metricValue is the value of the counter or gauge of family name with exactly these
// labels; 0 when the series does not exist (yet).
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		if m.Counter != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return 0
}

// cli runs the runner binary with args against rp (its config and admin API) and
// returns its exit code and output.
func (rp *runnerProc) cli(t *testing.T, cmd string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{cmd, "-c", rp.config(), "--admin", rp.adminAPI(t).url}, args...)
	c := exec.CommandContext(ctx, runnerBin, full...)
	c.Dir = rp.dir
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("runner %s: %v", strings.Join(full, " "), err)
	}
	return code, out.String(), errb.String()
}

// bgCLI is a long-running CLI command (logs -f, events).
type bgCLI struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	errb   bytes.Buffer
	exited chan struct{}
}

// cliBackground starts the runner binary with args against rp; it is killed at the
// end of the test.
func (rp *runnerProc) cliBackground(t *testing.T, cmd string, args ...string) *bgCLI {
	t.Helper()
	full := append([]string{cmd, "-c", rp.config(), "--admin", rp.adminAPI(t).url}, args...)
	b := &bgCLI{cmd: exec.Command(runnerBin, full...), exited: make(chan struct{})}
	b.cmd.Dir = rp.dir
	b.cmd.Stdout = &lockedWriter{mu: &b.mu, w: &b.out}
	b.cmd.Stderr = &lockedWriter{mu: &b.mu, w: &b.errb}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		_ = b.cmd.Process.Kill()
		<-b.exited
		if t.Failed() {
			t.Logf("runner %s stdout:\n%s\nstderr:\n%s", strings.Join(full, " "), b.stdout(), b.stderr())
		}
	})
	return b
}

func (b *bgCLI) stdout() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

func (b *bgCLI) stderr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.errb.String()
}

func (b *bgCLI) running() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}
