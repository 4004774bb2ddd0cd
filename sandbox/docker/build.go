package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/xcore/runner/sandbox"
)

// BuildImage resolves a plugin folder to an image: tagged xcore-build/<plugin>:<content
// hash>, so an unchanged folder is never rebuilt (and keeps its image ID across runner
// restarts, which adoption needs). A folder not built yet is built when build is true,
// each line of the builder's output passed to progress; when false (`runner plan`) it
// resolves to a placeholder ID that shows as a change.
func (c *Client) BuildImage(ctx context.Context, plugin, dir string, build bool, progress func(line string)) (ref, id string, err error) {
	bc, err := PackContext(dir)
	if err != nil {
		return "", "", err
	}
	ref = fmt.Sprintf("xcore-build/%s:%s", plugin, bc.Hash[:12])
	if id, err = c.ResolveImage(ctx, ref); err == nil {
		return ref, id, nil
	}
	if !build {
		return ref, "unbuilt:" + bc.Hash[:12], nil
	}
	id, err = c.Build(ctx, bc, ref, plugin, progress)
	return ref, id, err
}

// BuildContext is a plugin folder packed for the engine: the tar it receives and a hash
// of exactly what is in it, so the same content gives the same tag (and no rebuild).
type BuildContext struct {
	Tar  []byte
	Hash string // hex SHA-256 over paths, modes and contents
}

// maxContext bounds what is sent to the builder: a plugin folder holds a static binary
// and a few files, not a repository.
const maxContext = 512 << 20

// PackContext tars dir for a build, leaving out what its .dockerignore excludes (the
// engine's own pattern rules); Dockerfile and .dockerignore are always sent, as the
// docker CLI does. Pure file work: no engine.
func PackContext(dir string) (BuildContext, error) {
	if _, err := os.Stat(filepath.Join(dir, "Dockerfile")); err != nil {
		return BuildContext{}, fmt.Errorf("build context %s: no Dockerfile: %w", dir, err)
	}
	var pm *patternmatcher.PatternMatcher
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return BuildContext{}, fmt.Errorf("read %s/.dockerignore: %w", dir, err)
		}
		if pm, err = patternmatcher.New(patterns); err != nil {
			return BuildContext{}, fmt.Errorf("%s/.dockerignore: %w", dir, err)
		}
	}
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if pm != nil && rel != "Dockerfile" && rel != ".dockerignore" {
			if skip, err := pm.MatchesOrParentMatches(rel); err != nil {
				return err
			} else if skip {
				if d.IsDir() && !pm.Exclusions() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		if d.Type().IsRegular() {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return BuildContext{}, fmt.Errorf("build context %s: %w", dir, err)
	}
	sort.Strings(files)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	h := sha256.New()
	for _, rel := range files {
		full := filepath.Join(dir, filepath.FromSlash(rel))
		st, err := os.Stat(full)
		if err != nil {
			return BuildContext{}, err
		}
		if buf.Len()+int(st.Size()) > maxContext {
			return BuildContext{}, fmt.Errorf("build context %s is over %d MiB: add a .dockerignore", dir, maxContext>>20)
		}
		data, err := os.ReadFile(full)
		if err != nil {
			return BuildContext{}, err
		}
		// Deterministic headers (no times, no owners): only content and mode matter.
		mode := int64(st.Mode().Perm())
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return BuildContext{}, err
		}
		if _, err := tw.Write(data); err != nil {
			return BuildContext{}, err
		}
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", rel, mode, len(data))
		h.Write(data)
	}
	if err := tw.Close(); err != nil {
		return BuildContext{}, err
	}
	return BuildContext{Tar: buf.Bytes(), Hash: hex.EncodeToString(h.Sum(nil))}, nil
}

// Build builds bc as tag through the engine API, passing each line of the builder's
// output to progress, and returns the image ID. A failed build returns the builder's
// message.
func (c *Client) Build(ctx context.Context, bc BuildContext, tag, plugin string, progress func(line string)) (string, error) {
	res, err := c.api.ImageBuild(ctx, bytes.NewReader(bc.Tar), client.ImageBuildOptions{
		Tags:        []string{tag},
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{sandbox.LabelRunner: c.runnerID, sandbox.LabelPlugin: plugin},
	})
	if err != nil {
		return "", fmt.Errorf("build %s: %w", tag, err)
	}
	defer res.Body.Close()
	// The builder answers with a stream of JSON messages: text to show, or an error.
	var partial string
	dec := json.NewDecoder(res.Body)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return "", fmt.Errorf("build %s: read builder output: %w", tag, err)
		}
		if m.Error != nil {
			return "", fmt.Errorf("build %s: %s", tag, strings.TrimSpace(m.Error.Message))
		}
		lines := strings.Split(partial+m.Stream, "\n")
		partial = lines[len(lines)-1]
		for _, l := range lines[:len(lines)-1] {
			if l = strings.TrimSpace(l); l != "" && progress != nil {
				progress(l)
			}
		}
	}
	if l := strings.TrimSpace(partial); l != "" && progress != nil {
		progress(l)
	}
	return c.ResolveImage(ctx, tag)
}
