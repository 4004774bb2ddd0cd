package integration

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func restartBlock(attempts int, backoff, maxBackoff string) string {
	return fmt.Sprintf(`    restart {
      attempts    = %d
      backoff     = %q
      max_backoff = %q
    }
`, attempts, backoff, maxBackoff)
}

// /crash kills the container; a new one serves after the backoff; meanwhile clients get
// 503 + Retry-After at once, never a hang.
func TestCrashRestart(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", plugin("crashy", images["crashy"], "  supervisor {\n    health { path = \"/healthz\" }\n"+restartBlock(5, "500ms", "2s")+"  }\n")))
	first := rp.container("crashy")
	crashed := time.Now()
	get(t, rp.url("/plugins/crashy/crash?code=3"))

	var gap503 int
	eventually(t, 30*time.Second, "a new container serving", func() bool {
		begin := time.Now()
		resp, body := get(t, rp.url("/plugins/crashy/"))
		if took := time.Since(begin); took > 2*time.Second {
			t.Errorf("a request during the restart took %s", took)
		}
		switch resp.StatusCode {
		case 200:
			return true
		case 503:
			gap503++
			if resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "exit code 3") {
				t.Errorf("503 without Retry-After or reason: %s", body)
			}
		default:
			// A 502 would be the instant between the exit and the engine's die event:
			// the proxy asks the engine and answers 503 instead.
			t.Errorf("during restart: %d %s", resp.StatusCode, body)
		}
		return false
	})
	serving := time.Since(crashed)
	if rp.container("crashy") == first {
		t.Error("the same container serves: a restart must be a new container")
	}
	rp.waitLog(5*time.Second, `msg="plugin restarted" plugin=crashy`)
	t.Logf("crash → new container serving: %s (backoff 500ms); %d requests answered 503 meanwhile", serving.Round(time.Millisecond), gap503)
	died := rp.logTime(`msg="plugin crashed; restarting" plugin=crashy`)
	restarted := rp.logTime(`msg="plugin restarted" plugin=crashy`)
	t.Logf("die event → restarted and routed: %s", restarted.Sub(died).Round(time.Millisecond))
}

var backoffRE = regexp.MustCompile(`msg="plugin crashed; restarting" plugin=loop .* in=([0-9.]+m?s)`)

// A crash loop ends in `failed` after `attempts`, with growing, capped delays; another
// plugin serves under load meanwhile without a failed request.
func TestCrashLoopFails(t *testing.T) {
	t.Parallel()
	loop := plugin("loop", images["crashy"], "  env = { CRASHY_EXIT = \"2\" }\n  supervisor {\n"+restartBlock(5, "200ms", "600ms")+"  }\n")
	other := plugin("hello", images["hello"], "")
	rp := startRunner(t, hcl("", other, loop))
	load := startLoad(t, rp.url("/plugins/hello/"), 4, 60*time.Second)
	rp.waitLog(60*time.Second, `msg="plugin failed; not restarting`)
	res := load.stop()
	t.Logf("other plugin during the crash loop: %s", res)
	if res.failed != 0 {
		t.Errorf("%d failed requests on an unrelated plugin: %v", res.failed, res.errs)
	}
	var delays []time.Duration
	for _, m := range backoffRE.FindAllStringSubmatch(rp.errOut(), -1) {
		d, _ := time.ParseDuration(m[1])
		delays = append(delays, d)
	}
	t.Logf("backoff sequence observed: %v", delays)
	if len(delays) != 4 {
		t.Fatalf("want 4 restarts before failing (attempts 5), got delays %v", delays)
	}
	for i := 1; i < len(delays); i++ {
		if delays[i] < delays[i-1] && delays[i] < 600*time.Millisecond*9/10 {
			t.Errorf("delays do not grow: %v", delays)
		}
	}
	for _, d := range delays {
		if d > 600*time.Millisecond {
			t.Errorf("delay %s over max_backoff 600ms", d)
		}
	}
	resp, body := get(t, rp.url("/plugins/loop/"))
	p := wantProblem(t, resp, body, 503)
	if !strings.Contains(p.Detail, "crashed 5 times in 5m0s") || !strings.Contains(p.Detail, "exited with code 2") {
		t.Errorf("503 detail %q does not name the reason", p.Detail)
	}
	eventually(t, 10*time.Second, "crash-loop containers removed", func() bool { return rp.containerID("loop") == "" })
}

func TestOOMKilledIsRecordedAndRestarted(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", plugin("hog", images["hog"], "  supervisor {\n    memory = \"32MiB\"\n"+restartBlock(5, "250ms", "1s")+"  }\n")))
	first := rp.container("hog")
	get(t, rp.url("/plugins/hog/oom"))
	rp.waitLog(30*time.Second, `msg="plugin restarted" plugin=hog`)
	if !strings.Contains(rp.errOut(), `reason="OOM killed (memory limit 32MiB`) {
		t.Errorf("not recorded as an OOM kill:\n%s", rp.errOut())
	}
	if rp.container("hog") == first {
		t.Error("same container after the OOM kill")
	}
}

func TestUnhealthyRestartAndHangTimeout(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", plugin("hang", images["hang"], `  supervisor {
    request_timeout = "1s"
    health {
      path     = "/healthz"
      interval = "200ms"
      failures = 3
    }
`+restartBlock(5, "250ms", "1s")+"  }\n")))
	begin := time.Now()
	resp, body := get(t, rp.url("/plugins/hang/hang"))
	wantProblem(t, resp, body, 504)
	if took := time.Since(begin); took > 1100*time.Millisecond {
		t.Errorf("/hang answered after %s, want 504 at request_timeout 1s (+10%%)", took)
	}
	first := rp.container("hang")
	if code, err := httpPost(rp.url("/plugins/hang/sick"), ""); err != nil || code != 200 {
		t.Fatalf("/sick: %d %v", code, err)
	}
	rp.waitLog(30*time.Second, `msg="plugin restarted" plugin=hang`)
	if !strings.Contains(rp.errOut(), "health check failed 3 times") {
		t.Errorf("restart reason missing:\n%s", rp.errOut())
	}
	if rp.container("hang") == first {
		t.Error("same container after failed health checks")
	}
}

// max_concurrent = 4 with 16 concurrent slow requests: 4 served, 12 refused at once.
func TestMaxConcurrent(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", plugin("slow", images["slow"], "  supervisor {\n    max_concurrent = 4\n  }\n")))
	var mu sync.Mutex
	codes := map[int]int{}
	var slowest503 time.Duration
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			begin := time.Now()
			resp, err := http.Get(rp.url("/plugins/slow/?delay=1500ms"))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			if resp.StatusCode == 503 {
				slowest503 = max(slowest503, time.Since(begin))
				if resp.Header.Get("Retry-After") == "" {
					t.Error("503 without Retry-After")
				}
			}
		})
	}
	wg.Wait()
	t.Logf("16 concurrent requests, max_concurrent 4: %v; slowest 503 after %s", codes, slowest503.Round(time.Millisecond))
	if codes[200] != 4 || codes[503] != 12 {
		t.Errorf("codes %v, want 4×200 and 12×503", codes)
	}
	if slowest503 > 500*time.Millisecond {
		t.Errorf("a 503 took %s: excess requests must be refused at once, not queued", slowest503)
	}
}

// The last words of a crashed container survive its removal: `runner logs --previous`
// prints them, and `runner logs` the new container's.
func TestLogsOfACrashedContainer(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", plugin("crashy", images["crashy"], "  supervisor {\n    health { path = \"/healthz\" }\n"+restartBlock(5, "200ms", "1s")+"  }\n")))
	first := rp.container("crashy")
	get(t, rp.url("/plugins/crashy/crash?code=3"))
	rp.waitLog(30*time.Second, `msg="plugin restarted" plugin=crashy`)
	code, out, errOut := rp.cli(t, "logs", "--previous", "crashy")
	if code != 0 || !strings.Contains(out, "crashy: exiting with code 3 as asked") || !strings.Contains(out, "(generation 1)") {
		t.Errorf("logs --previous: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = rp.cli(t, "logs", "crashy")
	if code != 0 || strings.Contains(out, "exiting with code 3") || rp.container("crashy") == first {
		t.Errorf("logs of the new container: exit %d\n%s", code, out)
	}
}
