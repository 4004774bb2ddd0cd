package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Ownership: two benches may run at once (each with its own load, e.g. one engineer's
// `-only proxy` next to another's smoke run), so each removes only what is its own, or
// what a bench that is gone left behind.
//
// A run is identified by its pid and the process's start time (field 22 of
// /proc/<pid>/stat, clock ticks since boot), so that a recycled pid is not taken for a
// live owner. The containers the bench runs itself carry the label io.xcore.bench=<run
// id>; every temp dir of the run (the runners' state dirs, nginx's, the load scripts')
// is under $TMPDIR/xcore-bench-run-<run id>. At start, the containers and run dirs of
// runs whose process is gone are removed (with the runners' containers and networks and
// the nginx found in them); at the end, the run's own.
const (
	benchLabelKey = "io.xcore.bench"
	tempPrefix    = "xcore-bench-"
	runDirPrefix  = tempPrefix + "run-"
	// legacyAge: containers labelled io.xcore.bench=1 and temp dirs xcore-bench-* not
	// under a run dir come from benches older than run ids, which name no owner. They are
	// removed only when older than this (such a bench ran for at most ~9 minutes).
	legacyAge   = 20 * time.Minute
	legacyValue = "1"
)

var (
	runID  string // "<pid>-<start time>"
	runDir string // $TMPDIR/xcore-bench-run-<runID>
)

// benchLabel is the label of this run's own containers.
func benchLabel() string { return benchLabelKey + "=" + runID }

// initRun sets runID and creates runDir.
func initRun() error {
	pid := os.Getpid()
	st, err := procStartTime(pid)
	if err != nil {
		return fmt.Errorf("run id: %w", err)
	}
	runID = fmt.Sprintf("%d-%d", pid, st)
	runDir = filepath.Join(os.TempDir(), runDirPrefix+runID)
	return os.MkdirAll(runDir, 0o755)
}

// mkTemp makes a temp dir of this run.
func mkTemp(prefix string) (string, error) {
	return os.MkdirTemp(runDir, tempPrefix+prefix)
}

// procStartTime is field 22 of /proc/<pid>/stat (after the command, which may hold
// spaces and parentheses: the fields are counted from the last ')').
func procStartTime(pid int) (uint64, error) {
	f, err := procStatFields(pid)
	if err != nil {
		return 0, err
	}
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// procStatFields are the fields of /proc/<pid>/stat from the third (state) on.
func procStatFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return statFields(string(b))
}

func statFields(s string) ([]string, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("stat: no ')'")
	}
	return strings.Fields(s[i+1:]), nil
}

// parseRunID splits "<pid>-<start time>".
func parseRunID(id string) (pid int, start uint64, ok bool) {
	p, s, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(p)
	start, err2 := strconv.ParseUint(s, 10, 64)
	return pid, start, err1 == nil && err2 == nil && pid > 0
}

// ownerAlive reports whether the bench process of run id is still running.
func ownerAlive(id string) bool {
	pid, start, ok := parseRunID(id)
	if !ok {
		return false
	}
	st, err := procStartTime(pid)
	return err == nil && st == start
}

// removeByLabel removes this run's own containers.
func removeByLabel() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ids := dockerIDs(ctx, "label="+benchLabel()); len(ids) > 0 {
		if _, err := docker(ctx, append([]string{"rm", "-f"}, ids...)...); err != nil {
			progress("cleanup: %v", err)
		}
	}
}

// cleanupStale removes what benches that are gone left behind: their labelled containers,
// and their run dirs with whatever was started from them. Other live benches' things are
// left alone.
func cleanupStale() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := docker(ctx, "ps", "-a", "--filter", "label="+benchLabelKey,
		"--format", `{{.ID}}	{{.Label "`+benchLabelKey+`"}}	{{.CreatedAt}}`)
	if err != nil {
		progress("cleanup: %v", err)
	}
	var stale []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 || f[1] == runID {
			continue
		}
		if staleOwner(f[1], f[2], time.Now()) {
			stale = append(stale, f[0])
		}
	}
	if len(stale) > 0 {
		progress("cleanup: removing %d container(s) of benches that are gone", len(stale))
		if _, err := docker(ctx, append([]string{"rm", "-f"}, stale...)...); err != nil {
			progress("cleanup: %v", err)
		}
	}

	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range dirs {
		name := filepath.Base(dir)
		if id, ok := strings.CutPrefix(name, runDirPrefix); ok {
			if id == runID || ownerAlive(id) {
				continue
			}
			if cleanRunDir(dir) {
				_ = os.RemoveAll(dir)
			}
			continue
		}
		// A temp dir of an older bench (no run dir): only when old enough.
		if st, err := os.Stat(dir); err != nil || time.Since(st.ModTime()) < legacyAge {
			continue
		}
		if cleanTempDir(dir) {
			_ = os.RemoveAll(dir)
		}
	}
}

// staleOwner decides whether a container labelled io.xcore.bench=value, created at
// created (docker ps's CreatedAt), belongs to a bench that is gone.
func staleOwner(value, created string, now time.Time) bool {
	if _, _, ok := parseRunID(value); ok {
		return !ownerAlive(value)
	}
	if value != legacyValue {
		return false // not a bench's label value we know: someone else's
	}
	at, err := time.Parse("2006-01-02 15:04:05 -0700 MST", created)
	return err == nil && now.Sub(at) > legacyAge
}

// cleanOwn removes this run's containers and run dir (at the end, also after an error).
func cleanOwn() {
	removeByLabel()
	if runDir != "" && cleanRunDir(runDir) {
		_ = os.RemoveAll(runDir)
	}
}

// cleanRunDir cleans every temp dir under a run dir; true if nothing is left running.
func cleanRunDir(dir string) bool {
	subs, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	clean := true
	for _, sub := range subs {
		if cleanTempDir(sub) {
			_ = os.RemoveAll(sub)
		} else {
			clean = false
		}
	}
	return clean
}

// cleanTempDir removes the containers and network of the runner whose state dir is dir,
// and stops an nginx that runs from it; false if the runner's leftovers are not all gone
// (the dir is kept, so that the next run tries again).
func cleanTempDir(dir string) bool {
	n, clean := removeRunnerLeftovers(dir)
	if n > 0 {
		progress("cleanup: removed %d container(s) of an interrupted runner (%s)", n, dir)
	}
	stopStaleNginx(dir)
	if !clean {
		progress("cleanup: kept %s: a runner's containers or network could not be removed; the next run tries again", dir)
	}
	return clean
}
