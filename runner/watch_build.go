package runner

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchBuildDirs calls trigger (debounced) when anything under one of dirs changes: a
// plugin built from a folder is rebuilt and replaced when its files change. fsnotify is
// not recursive, so every subfolder is watched, and new ones as they appear.
func watchBuildDirs(ctx context.Context, log *slog.Logger, dirs []string, debounce time.Duration, trigger func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("start build watcher: %w", err)
	}
	defer w.Close()
	addTree := func(root string) {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				if err := w.Add(path); err != nil {
					log.Warn("cannot watch build folder", "dir", path, "err", err)
				}
			}
			return nil
		})
	}
	for _, d := range dirs {
		addTree(d)
	}
	return debounceEvents(ctx, w, log, debounce, func(ev fsnotify.Event) bool {
		if ev.Op == fsnotify.Chmod {
			return false
		}
		if ev.Op.Has(fsnotify.Create) {
			addTree(ev.Name) // a new subfolder: watch it too (no-op for a file)
		}
		log.Debug("build folder change", "file", ev.Name, "op", ev.Op.String())
		return true
	}, trigger)
}
