package main

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"text/tabwriter"
	"text/template"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// runnerModule is this repository's module: the plugin kit and the test module of a
// scaffolded plugin come from it.
const runnerModule = "github.com/xcore/runner"

//go:embed scaffold/*.tmpl
var scaffoldFS embed.FS

// scaffoldFile is one file `runner init` writes.
type scaffoldFile struct {
	name, tmpl, what string
}

// scaffoldFiles are written in this order and listed so.
var scaffoldFiles = []scaffoldFile{
	{"main.go", "main.go.tmpl", "the plugin, on the kit (" + runnerModule + "/plugin)"},
	{"plugin_test.go", "plugin_test.go.tmpl", "its tests: the handler alone, then its image under the real runner (xcoretest)"},
	{"Dockerfile", "Dockerfile.tmpl", "FROM scratch, the static binary, USER 65532:65532"},
	{"Makefile", "Makefile.tmpl", "make build | image | test | run"},
	{"plugins.hcl", "plugins.hcl.tmpl", "a runner config that serves it at /plugins/<name>/"},
	{"go.mod", "go.mod.tmpl", "the module"},
	{".dockerignore", "dockerignore.tmpl", "only bin/ goes to the image builder"},
	{".gitignore", "gitignore.tmpl", "bin/, .runner/"},
}

// scaffoldData fills the templates.
type scaffoldData struct {
	Name      string // the plugin's name in plugins.hcl, the binary's name
	Module    string
	Image     string // the image `make image` builds
	GoVersion string // of the go directive
}

// pluginNameRE is what config accepts as a plugin name (a DNS label).
var pluginNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func cmdInit(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("init", flag.ContinueOnError)
	fl.SetOutput(stderr)
	modPath := fl.String("module", "", "Go module `path` of the new repository (default: the plugin's name)")
	name := fl.String("name", "", "plugin `name` in plugins.hcl and of the binary (default: the directory's name)")
	fl.Usage = func() {
		fmt.Fprintf(fl.Output(), "Usage: runner init <dir> [--module path] [--name name]\n\n%s\n\nFlags:\n",
			"Write a plugin team's repository into dir (created if missing): a plugin on the\n"+
				"kit, its Dockerfile, a Makefile, a plugins.hcl to run it, and a test that runs\n"+
				"its image under the real runner. Existing files are never overwritten.")
		fl.PrintDefaults()
	}
	// Flags may come before or after the directory.
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	dir := fl.Arg(0)
	if dir != "" {
		if err := fl.Parse(fl.Args()[1:]); err != nil {
			return errUsage
		}
	}
	if dir == "" || fl.NArg() > 0 {
		fl.Usage()
		return errUsage
	}

	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	data := scaffoldData{Name: *name, Module: *modPath, GoVersion: goDirective()}
	if data.Name == "" {
		data.Name = nameFromDir(filepath.Base(abs))
	}
	if !pluginNameRE.MatchString(data.Name) {
		return fmt.Errorf("plugin name %q: want 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-' (set one with --name)", data.Name)
	}
	if data.Module == "" {
		data.Module = data.Name
	}
	if err := module.CheckImportPath(data.Module); err != nil {
		return fmt.Errorf("--module: %w", err)
	}
	data.Image = data.Name + ":dev"

	files, err := renderScaffold(data)
	if err != nil {
		return err
	}
	var exist []string
	for _, f := range scaffoldFiles {
		if _, err := os.Lstat(filepath.Join(abs, f.name)); err == nil {
			exist = append(exist, f.name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if len(exist) > 0 {
		return fmt.Errorf("%s already has %s: init writes a new repository and never overwrites a file; choose a new or empty directory", dir, strings.Join(exist, ", "))
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	for _, f := range scaffoldFiles {
		if err := writeNew(filepath.Join(abs, f.name), files[f.name]); err != nil {
			return err
		}
	}

	fmt.Fprintf(stdout, "wrote plugin %s (module %s) in %s:\n", data.Name, data.Module, dir)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for _, f := range scaffoldFiles {
		fmt.Fprintf(tw, "  %s\t%s\n", f.name, strings.ReplaceAll(f.what, "<name>", data.Name))
	}
	tw.Flush()
	fmt.Fprintf(stdout, `
next:
  cd %s
  go get %s@%s && go mod tidy
  make image                 # builds %s
  make test                  # needs Docker and the runner image (xcore-runner:latest)
  runner up -c plugins.hcl   # then: curl 127.0.0.1:8080/plugins/%s/
`, dir, runnerModule, kitVersion(), data.Image, data.Name)
	return nil
}

// renderScaffold executes every template; the Go files come out gofmt'ed.
func renderScaffold(data scaffoldData) (map[string][]byte, error) {
	out := make(map[string][]byte, len(scaffoldFiles))
	for _, f := range scaffoldFiles {
		src, err := scaffoldFS.ReadFile("scaffold/" + f.tmpl)
		if err != nil {
			return nil, err
		}
		t, err := template.New(f.tmpl).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("scaffold template %s: %w", f.tmpl, err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("scaffold template %s: %w", f.tmpl, err)
		}
		content := b.Bytes()
		if strings.HasSuffix(f.name, ".go") {
			if content, err = format.Source(content); err != nil {
				return nil, fmt.Errorf("scaffold %s: %w", f.name, err)
			}
		}
		out[f.name] = content
	}
	return out, nil
}

// writeNew creates path with content; it fails rather than replace a file that
// appeared since the check.
func writeNew(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// nameFromDir makes a plugin name of a directory's: lower case, other characters as '-'.
func nameFromDir(base string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	return name
}

// goDirective is the go directive of a new module: the Go this runner was built with
// (the kit needs no newer), or the minimum of this repository's go.mod.
func goDirective() string {
	if v := strings.TrimPrefix(runtime.Version(), "go"); regexp.MustCompile(`^1\.\d+(\.\d+)?$`).MatchString(v) {
		return v
	}
	return "1.26.8"
}

// kitVersion is the version of this repository to require: this runner's own when it
// is a release, else the latest.
func kitVersion() string {
	if v := versionString(); semver.IsValid(v) && semver.Prerelease(v) == "" {
		return v
	}
	return "latest"
}
