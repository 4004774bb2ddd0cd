package registry

import (
	"slices"
	"strings"
	"testing"
)

const dgst = "sha256:ab12000000000000000000000000000000000000000000000000000000000000"

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in                                string
		key, engine, familiar             string
		registry, path, tag, digest, repo string
	}{
		{in: "hello", key: "index.docker.io/library/hello:latest", engine: "hello:latest", familiar: "hello:latest",
			registry: "index.docker.io", path: "library/hello", tag: "latest"},
		{in: "hello:1.4", key: "index.docker.io/library/hello:1.4", engine: "hello:1.4", familiar: "hello:1.4",
			registry: "index.docker.io", path: "library/hello", tag: "1.4"},
		{in: "docker.io/library/hello:latest", key: "index.docker.io/library/hello:latest", engine: "docker.io/library/hello:latest",
			familiar: "docker.io/library/hello:latest", registry: "index.docker.io", path: "library/hello", tag: "latest"},
		{in: "team/hello:1.4", key: "index.docker.io/team/hello:1.4", engine: "team/hello:1.4", familiar: "team/hello:1.4",
			registry: "index.docker.io", path: "team/hello", tag: "1.4"},
		{in: "127.0.0.1:5000/team/hello:1.4", key: "127.0.0.1:5000/team/hello:1.4", engine: "127.0.0.1:5000/team/hello:1.4",
			familiar: "127.0.0.1:5000/team/hello:1.4", registry: "127.0.0.1:5000", path: "team/hello", tag: "1.4"},
		{in: "127.0.0.1:5000/team/hello", key: "127.0.0.1:5000/team/hello:latest", engine: "127.0.0.1:5000/team/hello:latest",
			familiar: "127.0.0.1:5000/team/hello:latest", registry: "127.0.0.1:5000", path: "team/hello", tag: "latest"},
		{in: "team/hello@" + dgst, key: "index.docker.io/team/hello@" + dgst, engine: "team/hello@" + dgst,
			familiar: "team/hello@" + dgst, registry: "index.docker.io", path: "team/hello", digest: dgst},
		{in: "127.0.0.1:5000/team/hello:1.4@" + dgst, key: "127.0.0.1:5000/team/hello@" + dgst, engine: "127.0.0.1:5000/team/hello@" + dgst,
			familiar: "127.0.0.1:5000/team/hello:1.4@" + dgst, registry: "127.0.0.1:5000", path: "team/hello", tag: "1.4", digest: dgst},
		{in: "ghcr.io/org/app:v2", key: "ghcr.io/org/app:v2", engine: "ghcr.io/org/app:v2", familiar: "ghcr.io/org/app:v2",
			registry: "ghcr.io", path: "org/app", tag: "v2"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			r, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{r.Key(), r.Engine(), r.Familiar(), r.Registry(), r.Path(), r.Tag(), r.Digest()}
			want := []string{tc.key, tc.engine, tc.familiar, tc.registry, tc.path, tc.tag, tc.digest}
			if !slices.Equal(got, want) {
				t.Errorf("Key, Engine, Familiar, Registry, Path, Tag, Digest =\n %q\nwant\n %q", got, want)
			}
			if r.Pinned() != (tc.digest != "") || r.String() != tc.in {
				t.Errorf("Pinned = %v, String = %q", r.Pinned(), r.String())
			}
		})
	}
}

// Every spelling of one tag is one key: several plugins on one image share a pull.
func TestParseSameKey(t *testing.T) {
	t.Parallel()
	var keys []string
	for _, s := range []string{"hello", "hello:latest", "library/hello", "docker.io/library/hello", "index.docker.io/library/hello:latest"} {
		r, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r.Key())
	}
	if len(slices.Compact(slices.Clone(keys))) != 1 {
		t.Errorf("keys %q, want one", keys)
	}
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"", " hello", "Team/Hello:1.4", "hello:", "hello@sha256:abc", "hello@@" + dgst, "http://127.0.0.1:5000/hello",
		"hello:tag with space", "hello:" + strings.Repeat("x", 200), "-hello",
	} {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			if r, err := Parse(in); err == nil {
				t.Errorf("Parse(%q) = %q, want an error", in, r.Key())
			} else if !strings.Contains(err.Error(), "not an image reference") {
				t.Errorf("error %q does not say what is wrong", err)
			}
		})
	}
}

func TestRepoDigests(t *testing.T) {
	t.Parallel()
	r, _ := Parse("hello:1.4")
	other := "sha256:cd34000000000000000000000000000000000000000000000000000000000000"
	got := r.RepoDigests([]string{"hello@" + dgst, "team/hello@" + other, "127.0.0.1:5000/hello@" + other, "docker.io/library/hello@" + other})
	if want := []string{dgst, other}; !slices.Equal(got, want) {
		t.Errorf("RepoDigests = %q, want %q (the engine's familiar names, same repository only)", got, want)
	}
}
