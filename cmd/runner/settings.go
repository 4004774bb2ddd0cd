package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"

	"github.com/xcore/runner/config"
)

// runnerSettings returns the runner block of the config at path, and the whole config
// when it validates. The commands that operate a running runner (ps, logs, reload,
// down, ...) must keep working while someone edits a plugin block into an invalid
// state — `runner reload` is how they learn that it is invalid — so when the config
// does not validate, the runner block is read on its own, over the documented defaults.
func runnerSettings(path string, stderr io.Writer) (config.Runner, *config.Config, error) {
	cfg, _, diags := config.Load(path)
	if cfg != nil && !diags.HasErrors() {
		return cfg.Runner, cfg, nil
	}
	r, err := runnerBlockOnly(path)
	if err != nil {
		// Not even the runner block can be read: show everything that is wrong.
		_, lerr := loadConfig(path, stderr)
		if lerr == nil {
			lerr = err
		}
		return config.Runner{}, nil, lerr
	}
	fmt.Fprintf(stderr, "warning: %s does not validate (see `runner validate -c %s`); using its runner block\n", path, path)
	return r, nil, nil
}

// runnerBlockOnly reads the addresses and paths of the runner block of the root file,
// over the defaults of config (DESIGN.md "Configuration contract"). Attributes that
// are not plain strings (function calls) keep their default.
func runnerBlockOnly(path string) (config.Runner, error) {
	root, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return config.Runner{}, err
	}
	resolve := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(root, p)
	}
	r := config.Runner{
		Listen:      "127.0.0.1:8080",
		AdminListen: "127.0.0.1:8081",
		StateDir:    resolve(".runner"),
	}
	f, diags := hclparse.NewParser().ParseHCLFile(path)
	if diags.HasErrors() {
		return r, diags
	}
	content, _, _ := f.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "runner"}}})
	tokenFile := ""
	for _, b := range content.Blocks {
		attrs, _ := b.Body.JustAttributes()
		str := func(name string, dst *string) {
			a := attrs[name]
			if a == nil {
				return
			}
			v, d := a.Expr.Value(nil)
			if d.HasErrors() || v.IsNull() || !v.IsKnown() || v.Type() != cty.String || v.AsString() == "" {
				return
			}
			*dst = v.AsString()
		}
		str("listen", &r.Listen)
		str("admin_listen", &r.AdminListen)
		var dir string
		str("state_dir", &dir)
		if dir != "" {
			r.StateDir = resolve(dir)
		}
		str("admin_token_file", &tokenFile)
	}
	r.AdminTokenFile = filepath.Join(r.StateDir, "admin.token")
	if tokenFile != "" {
		r.AdminTokenFile = resolve(tokenFile)
	}
	return r, nil
}
