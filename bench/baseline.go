package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// buildBaseline builds the runner as it was at the git revision rev (-baseline), so
// that section 1 measures it next to this tree's: the same loads, in the same run. The
// tree is taken with `git archive` (no worktree is added to the repository) into a temp
// dir of the run and built there, as `make build` does. It returns the binary's path
// and the revision's short name.
func buildBaseline(ctx context.Context, root, rev string) (bin, name string, err error) {
	short, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", rev+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("-baseline %q: not a commit: %w", rev, err)
	}
	name = strings.TrimSpace(string(short))
	dir, err := mkTemp("baseline-")
	if err != nil {
		return "", "", err
	}
	progress("building the runner at %s (-baseline) in %s", name, dir)
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", name)
	out, err := archive.StdoutPipe()
	if err != nil {
		return "", "", err
	}
	var stderr strings.Builder
	archive.Stderr = &stderr
	if err := archive.Start(); err != nil {
		return "", "", err
	}
	xerr := untar(out, dir)
	_, _ = io.Copy(io.Discard, out) // after an error too: git must not block on a full pipe
	if err := archive.Wait(); err != nil || xerr != nil {
		return "", "", fmt.Errorf("git archive %s: %w", name, errors.Join(err, xerr, errors.New(strings.TrimSpace(stderr.String()))))
	}
	bin = filepath.Join(dir, "bin", "runner") // as `make build`: dir/runner is the package
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/runner")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build the runner at %s: %w\n%s", name, err, tail(string(out), 2000))
	}
	return bin, name, nil
}

// untar extracts the regular files and directories of a tar stream under dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(path, dir+string(filepath.Separator)) {
			return fmt.Errorf("tar entry %q leaves %s", h.Name, dir)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}
