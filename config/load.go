package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Block types of plugins.hcl.
const (
	blockRunner     = "runner"
	blockService    = "service"
	blockPlugin     = "plugin"
	blockSupervisor = "supervisor"
	blockRestart    = "restart"
	blockHealth     = "health"
	blockPlacement  = "placement"
)

// fileSchema is the top level of every config file, the root one and the drop-ins.
var fileSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: blockRunner},
		{Type: blockService, LabelNames: []string{"name"}},
		{Type: blockPlugin, LabelNames: []string{"name"}},
	},
}

// nameRE is what service names must match: they become URL path segments and env var
// prefixes.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// pluginNameRE is what plugin names must match: a DNS label (RFC 1123: 1 to 63 of a-z,
// 0-9 and "-", not starting or ending with "-"). They become container names, URL path
// segments and log fields.
var pluginNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// MaxPlugins is the most plugins one config may define. Each is a container, a
// supervisor goroutine and (reach = "published") a docker-proxy process: past a few
// hundred a single host is the wrong tool, and a typo'd generator should fail loudly.
const MaxPlugins = 500

// Load reads the root file at path plus every *.hcl in runner.plugins_dir (resolved relative
// to the root file's dir; a missing plugins_dir is fine; files read in lexical order, dot
// files skipped), applies defaults, validates, and returns the config. On any error
// diagnostic, cfg is nil. files maps filename -> *hcl.File for hcl.NewDiagnosticTextWriter.
//
// Diagnostics name drop-in files as filepath.Join(filepath.Dir(path), plugins_dir, name),
// so they are relative when path is.
func Load(path string) (cfg *Config, files map[string]*hcl.File, diags hcl.Diagnostics) {
	return LoadBackend(path, "")
}

// LoadBackend is Load for backend (BackendDocker or BackendSwarm) whatever the runner
// block says: `runner validate --backend swarm` checks a config against the cluster
// backend before its runner block says so. "" is the runner block's backend.
func LoadBackend(path, backend string) (cfg *Config, files map[string]*hcl.File, diags hcl.Diagnostics) {
	parser := hclparse.NewParser()
	rootDir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, parser.Files(), hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid config path",
			Detail:   "resolve " + path + ": " + err.Error(),
		}}
	}
	l := &loader{
		decoder:  decoder{ctx: evalContext(rootDir)},
		parser:   parser,
		rootDir:  rootDir,
		services: map[string]hcl.Range{},
		plugins:  map[string]hcl.Range{},
		backend:  backend,
	}
	if backend != "" && backend != BackendDocker && backend != BackendSwarm {
		return nil, parser.Files(), hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid backend",
			Detail:   fmt.Sprintf("got %q; use %s", backend, quoteOr([]string{BackendDocker, BackendSwarm})),
		}}
	}
	cfg = l.load(path)
	if l.diags.HasErrors() {
		return nil, parser.Files(), l.diags
	}
	return cfg, parser.Files(), l.diags
}

// LoadRunner reads only the runner block of the root file at path, over the defaults,
// exactly as Load would decode it, and ignores every other block and the drop-in files.
// The commands that talk to a running runner (ps, logs, reload, ...) need its addresses
// and token file even while a plugin block is being edited into an invalid state, be it
// a value or the syntax: when the file does not parse, the runner block is cut out and
// parsed alone, so a syntax error elsewhere does not matter. When the runner block
// itself does not parse, diags holds the first error only: what follows a syntax error
// is mostly its echo. files is for WriteDiagnostics.
func LoadRunner(path string) (r Runner, files map[string]*hcl.File, diags hcl.Diagnostics) {
	parser := hclparse.NewParser()
	rootDir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return Runner{}, parser.Files(), hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid config path", Detail: "resolve " + path + ": " + err.Error()}}
	}
	l := &loader{decoder: decoder{ctx: evalContext(rootDir)}, parser: parser, rootDir: rootDir}
	r = defaultRunner(rootDir)
	f, pdiags := parser.ParseHCLFile(path)
	if f == nil { // unreadable
		return r, parser.Files(), firstError(pdiags)
	}
	body := f.Body
	if pdiags.HasErrors() {
		alone, bdiags := runnerBlockAlone(f.Bytes, path)
		if bdiags.HasErrors() { // the error is in the runner block
			return r, parser.Files(), firstError(bdiags)
		}
		if alone == nil { // no runner block to be found
			return r, parser.Files(), firstError(pdiags)
		}
		body = alone
	} else {
		l.append(pdiags)
	}
	content, _, _ := body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: blockRunner}}})
	if b := l.single(content.Blocks.OfType(blockRunner)); b != nil {
		r, _, _ = l.decodeRunner(b)
	}
	return r, parser.Files(), l.diags
}

// runnerLine is the first line of a runner block, as every config writes it.
var runnerLine = regexp.MustCompile(`(?m)^[ \t]*runner[ \t]*\{`)

// runnerBlockAlone parses the runner block of src alone: from the first line that opens
// one to its matching closing brace (or the end of the file), at its place in the file
// so that positions stay true. An error elsewhere in src, even an unterminated string
// that swallows the rest of the file, cannot reach it. Nil without such a line.
func runnerBlockAlone(src []byte, filename string) (hcl.Body, hcl.Diagnostics) {
	loc := runnerLine.FindIndex(src)
	if loc == nil {
		return nil, nil
	}
	begin := loc[0]
	start := hcl.Pos{Line: 1 + bytes.Count(src[:begin], []byte("\n")), Column: 1, Byte: begin}
	end := len(src)
	// Template braces ("${", "%{") have token types of their own: only block and object
	// braces count.
	toks, _ := hclsyntax.LexConfig(src[begin:], filename, start)
	depth := 0
	for _, tok := range toks {
		if tok.Type == hclsyntax.TokenOBrace {
			depth++
		} else if tok.Type == hclsyntax.TokenCBrace {
			if depth--; depth == 0 {
				end = begin + tok.Range.End.Byte - start.Byte
				break
			}
		}
	}
	f, diags := hclsyntax.ParseConfig(src[begin:end], filename, start)
	if f == nil {
		return nil, diags
	}
	return f.Body, diags
}

// firstError keeps the first error of diags: after a syntax error, the parser's
// recovery and the decoding of what it recovered mostly repeat it (an unterminated
// string gave "Invalid multi-line string" on each of the next 7 lines, then "Missing
// port" for the attribute it swallowed). Its detail says how many more there were.
func firstError(diags hcl.Diagnostics) hcl.Diagnostics {
	var first *hcl.Diagnostic
	more := 0
	for _, d := range diags {
		switch {
		case d.Severity != hcl.DiagError:
		case first == nil:
			first = d
		default:
			more++
		}
	}
	if first == nil {
		return diags
	}
	if more == 0 {
		return hcl.Diagnostics{first}
	}
	d := *first
	d.Detail = strings.TrimSpace(d.Detail + fmt.Sprintf(" (%d more %s after this one, most likely caused by it, %s not shown)", more, plural(more, "error", "errors"), plural(more, "is", "are")))
	return hcl.Diagnostics{&d}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// WriteDiagnostics prints diags with source snippets (hcl.NewDiagnosticTextWriter, width 80).
//
// Each diagnostic starts with a compiler-style "file:line:col: error: summary" line, so
// editors and terminals can jump to it, followed by hcl's text with the source snippet.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, color bool) error {
	tw := hcl.NewDiagnosticTextWriter(w, files, 80, color)
	for _, d := range diags {
		if d.Subject != nil {
			sev := "error"
			if d.Severity == hcl.DiagWarning {
				sev = "warning"
			}
			if _, err := fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, sev, d.Summary); err != nil {
				return err
			}
		}
		if err := tw.WriteDiagnostic(d); err != nil {
			return err
		}
	}
	return nil
}

type loader struct {
	decoder
	parser  *hclparse.Parser
	rootDir string // absolute directory of the root file

	// Every declared name with where it was first declared, valid block or not, so that
	// one bad block does not cascade into "unknown service" errors.
	services map[string]hcl.Range
	plugins  map[string]hcl.Range
	// unparsed: a file did not parse. Its blocks are missing, so the others are not
	// decoded either: their references to those blocks would fail in a cascade.
	unparsed bool
	// backend overrides the runner block's when set; swarm is the one in effect, as the
	// plugins are checked against it.
	backend string
	swarm   bool
}

func (l *loader) load(path string) *Config {
	cfg := &Config{
		Runner:   defaultRunner(l.rootDir),
		Services: map[string]*Service{},
		Plugins:  map[string]*Plugin{},
	}
	root := l.parse(path)
	if root == nil {
		return cfg
	}
	cfg.Files = append(cfg.Files, path)

	pluginsDir := filepath.Join(filepath.Dir(path), defaultPluginsDir)
	var pluginsDirRange hcl.Range // where a plugins_dir problem is reported
	if b := l.single(root.Blocks.OfType(blockRunner)); b != nil {
		var raw string
		var rawRange *hcl.Range
		cfg.Runner, raw, rawRange = l.decodeRunner(b)
		pluginsDirRange = b.DefRange
		if rawRange != nil {
			pluginsDirRange = *rawRange
		}
		if filepath.IsAbs(raw) {
			pluginsDir = filepath.Clean(raw)
		} else {
			pluginsDir = filepath.Join(filepath.Dir(path), raw)
		}
	}
	if l.backend != "" {
		cfg.Runner.Backend = l.backend
	}
	l.swarm = cfg.Runner.Backend == BackendSwarm

	services := root.Blocks.OfType(blockService)
	plugins := root.Blocks.OfType(blockPlugin)
	for _, name := range l.dropIns(pluginsDir, cfg.Runner.PluginsDir, path, pluginsDirRange) {
		content := l.parse(name)
		if content == nil {
			continue
		}
		cfg.Files = append(cfg.Files, name)
		for _, b := range content.Blocks.OfType(blockRunner) {
			l.errorf(b.DefRange, "Unexpected runner block",
				"the runner block is only allowed in the root file %s, not in plugins_dir files", path)
		}
		services = append(services, content.Blocks.OfType(blockService)...)
		plugins = append(plugins, content.Blocks.OfType(blockPlugin)...)
	}

	if l.unparsed {
		return cfg
	}
	if len(plugins) > MaxPlugins {
		l.errorf(plugins[MaxPlugins].DefRange, "Too many plugins",
			"the config defines %d plugins; the limit is %d (config.MaxPlugins)", len(plugins), MaxPlugins)
	}

	// Services first: plugins of any file may reference services of any file.
	for _, b := range services {
		if l.declare(b, l.services) {
			if s := l.decodeService(b); s != nil {
				cfg.Services[s.Name] = s
			}
		}
	}
	l.checkServiceEnvNames(services)
	for _, b := range plugins {
		if l.declare(b, l.plugins) {
			if p := l.decodePlugin(b); p != nil {
				if p.RegistryPoll < 0 {
					p.RegistryPoll = cfg.Runner.RegistryPoll
				}
				cfg.Plugins[p.Name] = p
			}
		}
	}
	return cfg
}

// parse reads one file and returns its top-level content, or nil when it cannot be read
// or parsed. A file that does not parse reports its first error only (see firstError)
// and is not decoded: what the parser recovered from it would add errors of its own.
func (l *loader) parse(name string) *hcl.BodyContent {
	f, diags := l.parser.ParseHCLFile(name)
	if diags.HasErrors() {
		l.append(firstError(diags))
		l.unparsed = true
		return nil
	}
	l.append(diags)
	if f == nil {
		return nil
	}
	content, diags := f.Body.Content(fileSchema)
	l.append(diags)
	return content
}

// dropIns lists the *.hcl files of the plugins dir in lexical order, named under display.
// A missing dir is fine.
func (l *loader) dropIns(display, abs, rootPath string, subject hcl.Range) []string {
	entries, err := os.ReadDir(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if subject.Filename == "" {
		subject = hcl.Range{Filename: rootPath, Start: hcl.InitialPos, End: hcl.InitialPos}
	}
	if err != nil {
		l.errorf(subject, "Invalid plugins_dir", "cannot read %s: %s", abs, unwrapPathError(err))
		return nil
	}
	rootAbs, _ := filepath.Abs(rootPath)
	var names []string
	for _, e := range entries { // os.ReadDir sorts by name
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || filepath.Ext(n) != ".hcl" {
			continue
		}
		if filepath.Join(abs, n) == rootAbs {
			continue // plugins_dir = "." : the root file is not its own drop-in
		}
		names = append(names, filepath.Join(display, n))
	}
	return names
}

// declare checks the name label of a service or plugin block and records it; false means the
// block is a duplicate (reported) and must be skipped.
func (l *loader) declare(b *hcl.Block, seen map[string]hcl.Range) bool {
	name := b.Labels[0]
	switch {
	case b.Type == blockPlugin && !pluginNameRE.MatchString(name):
		l.errorf(b.LabelRanges[0], "Invalid plugin name",
			"%q is not a DNS label; use 1 to 63 characters of a-z, 0-9 and \"-\", starting and ending with a letter or digit", name)
	case b.Type != blockPlugin && !nameRE.MatchString(name):
		l.errorf(b.LabelRanges[0], "Invalid "+b.Type+" name",
			"%q is not allowed; use 1 to 63 characters of a-z, 0-9, \"_\" and \"-\", starting with a letter or digit", name)
	}
	if prev, ok := seen[name]; ok {
		l.errorf(b.LabelRanges[0], "Duplicate "+b.Type+" "+strconv.Quote(name),
			"%s %q is defined twice; previous definition was at %s", b.Type, name, at(prev))
		return false
	}
	seen[name] = b.DefRange
	return true
}

func unwrapPathError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
