package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pluginFolder makes a plugin folder as a plugin team ships it: the prebuilt static
// binary plus a Dockerfile (there is no Go toolchain image to compile in).
func pluginFolder(t *testing.T, dockerfileExtra string) string {
	t.Helper()
	dir := t.TempDir()
	bin, err := os.ReadFile(filepath.Join(buildDir, "hello", "bin", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	writeDockerfile(t, dir, dockerfileExtra)
	if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("*.md\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeDockerfile(t *testing.T, dir, extra string) {
	t.Helper()
	df := "FROM scratch\nCOPY hello /hello\n" + extra + "USER 65532:65532\nENTRYPOINT [\"/hello\"]\n"
	writeFile(t, filepath.Join(dir, "Dockerfile"), df)
}

func TestBuildFromFolder(t *testing.T) {
	t.Parallel()
	dir := pluginFolder(t, "ENV GREETING=v1\n")
	cfg := hcl("  watch = true\n", fmt.Sprintf("plugin \"built\" {\n  build = %q\n  port = 8080\n  supervisor {\n    health { path = \"/healthz\" }\n  }\n}\n", dir))
	rp := startRunner(t, cfg)
	if _, body := get(t, rp.url("/plugins/built/")); body != "v1 from built\n" {
		t.Fatalf("built plugin answers %q", body)
	}
	if !strings.Contains(rp.errOut(), `msg=build plugin=built out="Step 1/`) {
		t.Errorf("the builder's output is not in the log:\n%s", rp.errOut())
	}
	gen1 := rp.container("built")

	// A file the .dockerignore excludes changes nothing.
	writeFile(t, filepath.Join(dir, "NOTES.md"), "not part of the image")
	// An edit in the folder: rebuild, replace start-first, no failed request.
	load := startLoad(t, rp.url("/plugins/built/"), 8, 60*time.Second)
	writeDockerfile(t, dir, "ENV GREETING=v2\n")
	rp.waitLog(60*time.Second, `msg="replaced plugin" plugin=built`)
	res := load.stop()
	t.Logf("built plugin during rebuild + replacement (8 clients): %s", res)
	if res.failed != 0 {
		t.Errorf("%d failed requests: %v", res.failed, res.errs)
	}
	if _, body := get(t, rp.url("/plugins/built/")); body != "v2 from built\n" || rp.container("built") == gen1 {
		t.Errorf("after the edit: %q", body)
	}
	if n := strings.Count(rp.errOut(), `msg="building plugin image"`); n != 2 {
		t.Errorf("%d builds, want 2 (the .dockerignored file must not trigger one)", n)
	}

	// A broken Dockerfile: the builder's message is logged, the old generation serves.
	gen2 := rp.container("built")
	writeDockerfile(t, dir, "COPY missing-file /x\n")
	rp.waitLog(60*time.Second, "missing-file")
	eventually(t, 10*time.Second, "build failure reported", func() bool { return strings.Contains(rp.errOut(), "current generation keeps serving") })
	if _, body := get(t, rp.url("/plugins/built/")); body != "v2 from built\n" || rp.container("built") != gen2 {
		t.Errorf("after a broken build: %q", body)
	}
}
