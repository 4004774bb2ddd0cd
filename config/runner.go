package config

import (
	"net"
	"path/filepath"
	"strconv"

	"github.com/hashicorp/hcl/v2"
)

const (
	defaultListen      = "127.0.0.1:8080"
	defaultAdminListen = "127.0.0.1:8081"
	defaultStateDir    = ".runner"
	defaultPluginsDir  = "plugins.d"
	adminTokenName     = "admin.token"
)

var runnerSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "listen"},
		{Name: "admin_listen"},
		{Name: "admin_token_file"},
		{Name: "state_dir"},
		{Name: "plugins_dir"},
		{Name: "watch"},
		{Name: "reach"},
		{Name: "keep_on_exit"},
	},
}

// defaultRunner is the runner block when there is none; paths are absolute under rootDir.
func defaultRunner(rootDir string) Runner {
	state := filepath.Join(rootDir, defaultStateDir)
	return Runner{
		Listen:         defaultListen,
		AdminListen:    defaultAdminListen,
		AdminTokenFile: filepath.Join(state, adminTokenName),
		StateDir:       state,
		PluginsDir:     filepath.Join(rootDir, defaultPluginsDir),
		Watch:          true,
		Reach:          ReachPublished,
		KeepOnExit:     false,
	}
}

// decodeRunner decodes the runner block over the defaults. It also returns plugins_dir as
// written (relative or not) and its range when set, to read and name the drop-in files.
func (l *loader) decodeRunner(b *hcl.Block) (r Runner, pluginsDir string, pluginsDirRange *hcl.Range) {
	r = defaultRunner(l.rootDir)
	pluginsDir = defaultPluginsDir
	content, diags := b.Body.Content(runnerSchema)
	l.append(diags)
	attrs := content.Attributes

	l.address(attrs, "listen", &r.Listen)
	l.address(attrs, "admin_listen", &r.AdminListen)
	if a := attrs["admin_listen"]; a != nil && r.Listen == r.AdminListen {
		if _, port, _ := net.SplitHostPort(r.Listen); port != "0" {
			l.errorf(a.Expr.Range(), "Invalid admin_listen", "%q is also listen; use another address", r.AdminListen)
		}
	}

	var dir string
	if l.nonEmpty(attrs, "state_dir", &dir, `".runner"`) != nil {
		r.StateDir = l.resolve(dir)
		r.AdminTokenFile = filepath.Join(r.StateDir, adminTokenName)
	}
	if a := l.nonEmpty(attrs, "plugins_dir", &dir, `"plugins.d"`); a != nil {
		pluginsDir = dir
		r.PluginsDir = l.resolve(dir)
		pluginsDirRange = a.Expr.Range().Ptr()
	}
	if l.nonEmpty(attrs, "admin_token_file", &dir, `".runner/admin.token"`) != nil {
		r.AdminTokenFile = l.resolve(dir)
	}
	l.boolean(attrs, "watch", &r.Watch)
	l.oneOf(attrs, "reach", &r.Reach, ReachPublished, ReachAddress)
	l.boolean(attrs, "keep_on_exit", &r.KeepOnExit)
	return r, pluginsDir, pluginsDirRange
}

// address decodes a host:port listen address; port 0 (ephemeral) is allowed.
func (l *loader) address(attrs hcl.Attributes, name string, dst *string) {
	var s string
	a := l.str(attrs, name, &s)
	if a == nil {
		return
	}
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 0 || n > 65535) {
			err = strconv.ErrRange
		}
	}
	if err != nil {
		l.errorf(a.Expr.Range(), "Invalid "+name, "%q is not host:port; use e.g. %q", s, "127.0.0.1:8080")
		return
	}
	*dst = s
}

// resolve makes p absolute relative to the root file's directory.
func (l *loader) resolve(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(l.rootDir, p)
}
