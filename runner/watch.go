package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// configDebounce is how long a config edit must be quiet before it is applied. Editors
// write a file in one burst of events microseconds apart (truncate + write, or write a
// temporary file + rename); 50 ms covers that with margin, and is all the latency a
// save adds before the replacement starts. A save caught half-written fails to load
// and changes nothing; the burst's last event reloads it whole.
const configDebounce = 50 * time.Millisecond

// watchConfig calls trigger (debounced) whenever the root config file or any *.hcl file in
// pluginsDir is created, written, removed or renamed.
//
// It watches the DIRECTORIES, not the files: editors that save by writing a temporary file
// and renaming it over the original (vim, many IDEs) replace the inode a file watch would
// follow. The root file's directory is watched, and so is pluginsDir's parent, so that a
// pluginsDir created later is seen and watched in turn. Other files (editor swap and backup
// files such as .plugins.hcl.swp, 4913, plugins.hcl~, hidden files) are ignored, as the
// config loader ignores them.
//
// trigger runs once, debounce after the LAST relevant event of a burst, on the watcher's
// goroutine. watchConfig returns nil when ctx ends (the fsnotify watcher is closed and no
// goroutine is left), or an error if the watcher cannot start. Watcher errors are logged
// at warn and watching goes on.
func watchConfig(ctx context.Context, log *slog.Logger, rootFile, pluginsDir string, debounce time.Duration, trigger func()) error {
	if log == nil {
		log = slog.Default()
	}
	rootFile, err := filepath.Abs(rootFile)
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	if pluginsDir != "" {
		if pluginsDir, err = filepath.Abs(pluginsDir); err != nil {
			return fmt.Errorf("watch config: %w", err)
		}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("start config watcher: %w", err)
	}
	cw := &configWatch{w: w, log: log, rootFile: rootFile, pluginsDir: pluginsDir}
	defer func() {
		if err := w.Close(); err != nil {
			log.Warn("close config watcher", "err", err)
		}
	}()
	rootDir := filepath.Dir(rootFile)
	if err := w.Add(rootDir); err != nil {
		return fmt.Errorf("watch %s: %w", rootDir, err)
	}
	if pluginsDir != "" {
		if parent := filepath.Dir(pluginsDir); parent != rootDir && pluginsDir != rootDir {
			// Only to see pluginsDir appear or go; best effort.
			if err := w.Add(parent); err != nil {
				log.Warn("config watcher cannot watch the parent of plugins_dir; a plugins_dir created later needs a reload", "dir", parent, "err", err)
			}
		}
		cw.watchPluginsDir()
	}

	return debounceEvents(ctx, w, log, debounce, func(ev fsnotify.Event) bool {
		if cw.relevant(ev) {
			log.Debug("config change", "file", ev.Name, "op", ev.Op.String())
			return true
		}
		return false
	}, trigger)
}

// debounceEvents runs trigger once, debounce after the last event of a burst that
// relevant accepts, until ctx ends or the watcher closes. Watcher errors are logged.
func debounceEvents(ctx context.Context, w *fsnotify.Watcher, log *slog.Logger, debounce time.Duration, relevant func(fsnotify.Event) bool, trigger func()) error {
	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if relevant(ev) {
				timer.Reset(debounce) // Go ≥1.23: no stale tick survives a Reset
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("file watcher error", "err", err)
		case <-timer.C:
			trigger()
		}
	}
}

// configWatch is the state of one watchConfig call; only its goroutine touches it.
type configWatch struct {
	w              *fsnotify.Watcher
	log            *slog.Logger
	rootFile       string
	pluginsDir     string // "" for none
	pluginsWatched bool
}

const configOps = fsnotify.Create | fsnotify.Write | fsnotify.Remove | fsnotify.Rename

// relevant says whether ev changes what the config loader would read, and keeps the watch
// on pluginsDir in step with that directory coming and going.
func (cw *configWatch) relevant(ev fsnotify.Event) bool {
	if ev.Op&configOps == 0 {
		return false // chmod alone changes nothing we read
	}
	name := filepath.Clean(ev.Name)
	if cw.pluginsDir != "" && name == cw.pluginsDir {
		switch {
		case ev.Has(fsnotify.Create):
			// Files may have landed in it before our watch did: count it as a change
			// when it already holds a drop-in.
			return cw.watchPluginsDir()
		case ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename):
			if cw.pluginsWatched {
				// A renamed directory keeps its inotify watch and would go on reporting
				// under the old name; a removed one has lost it already (error ignored).
				_ = cw.w.Remove(cw.pluginsDir)
				cw.pluginsWatched = false
			}
			return true
		}
		return false
	}
	if name == cw.rootFile {
		return true
	}
	if cw.pluginsDir == "" || filepath.Dir(name) != cw.pluginsDir || !isDropIn(filepath.Base(name)) {
		return false
	}
	if ev.Has(fsnotify.Create) {
		// A directory named *.hcl is not a drop-in (the loader skips it, and so do we).
		if fi, err := os.Lstat(name); err == nil && fi.IsDir() {
			return false
		}
	}
	return true
}

// watchPluginsDir adds the watch on pluginsDir if it exists and is not watched yet, and
// reports whether it now holds any drop-in file.
func (cw *configWatch) watchPluginsDir() bool {
	if cw.pluginsWatched {
		return false
	}
	err := cw.w.Add(cw.pluginsDir)
	switch {
	case err == nil:
		cw.pluginsWatched = true
	case errors.Is(err, fs.ErrNotExist):
		return false // not there (yet): its parent's watch will see it appear
	default:
		cw.log.Warn("config watcher cannot watch plugins_dir", "dir", cw.pluginsDir, "err", err)
		return false
	}
	entries, err := os.ReadDir(cw.pluginsDir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if !e.IsDir() && isDropIn(e.Name()) {
			return true
		}
	}
	return false
}

// isDropIn matches the files the config loader reads from plugins_dir.
func isDropIn(base string) bool {
	return !strings.HasPrefix(base, ".") && filepath.Ext(base) == ".hcl"
}
