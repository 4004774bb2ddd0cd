package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2"
)

const (
	defaultListen      = "127.0.0.1:8080"
	defaultAdminListen = "127.0.0.1:8081"
	defaultStateDir    = ".runner"
	defaultPluginsDir  = "plugins.d"
	adminTokenName     = "admin.token"
	// defaultRegistryPoll: a moved tag is noticed within 5 minutes, at the price of one
	// manifest HEAD per followed tag (HEADs do not count against Docker Hub's pull limit).
	defaultRegistryPoll = 5 * time.Minute
	// defaultStartConcurrency: how many plugin containers are created and started at
	// once. Unbounded, 50 plugins on 2 cores starved the engine: starts ran into their
	// start_timeout and were retried, 4× slower than 8 at a time.
	defaultStartConcurrency = 8
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
		{Name: "trusted_proxies"},
		{Name: "start_concurrency"},
		{Name: "protect_host"},
		{Name: "backend"},
		{Name: "registry_poll"},
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

		StartConcurrency: defaultStartConcurrency,
		ProtectHost:      true,
		Backend:          BackendDocker,
		RegistryPoll:     defaultRegistryPoll,
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
	l.trustedProxies(attrs, &r.TrustedProxies)
	integer(&l.decoder, attrs, "start_concurrency", &r.StartConcurrency, 1, 256)
	l.oneOf(attrs, "backend", &r.Backend, BackendDocker, BackendSwarm)
	if a := l.boolean(attrs, "protect_host", &r.ProtectHost); a != nil && !r.ProtectHost {
		// Allowed, but never silently: `runner up` and `runner validate` print it.
		l.diags = append(l.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Host protection off",
			Detail: "protect_host = false: plugins on the runner network can reach every service of the host " +
				"that listens on 0.0.0.0 or another address of the host, not just the runner's sidecar",
			Subject: a.Expr.Range().Ptr(),
		})
	}
	if !r.ProtectHost {
		// With host protection the runner's rules keep plugins off these addresses.
		l.warnExposed(attrs, "listen", r.Listen, "the public proxy, and through it every other plugin")
		l.warnExposed(attrs, "admin_listen", r.AdminListen, "the admin API (guarded by its bearer token only)")
	}
	l.durationOrOff(attrs, "registry_poll", &r.RegistryPoll)
	return r, pluginsDir, pluginsDirRange
}

// trustedProxies decodes a list of CIDR prefixes ("10.0.0.0/8", "::1/128").
func (l *loader) trustedProxies(attrs hcl.Attributes, dst *[]netip.Prefix) {
	var raw []string
	a := l.strList(attrs, "trusted_proxies", &raw)
	if a == nil {
		return
	}
	if out, ok := l.prefixes(a, raw); ok {
		*dst = out
	}
}

// prefixes parses the CIDR prefixes of list attribute a, one error per bad element at
// that element. A prefix with host bits set ("10.0.0.1/8") is an error rather than
// silently widened or narrowed: what is trusted or allowed must be what the operator
// meant.
func (l *loader) prefixes(a *hcl.Attribute, raw []string) ([]netip.Prefix, bool) {
	var out []netip.Prefix
	ok := true
	for i, s := range raw {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			hint := "e.g. \"10.0.0.0/8\" or \"127.0.0.1/32\""
			if addr, aerr := netip.ParseAddr(s); aerr == nil {
				hint = strconv.Quote(netip.PrefixFrom(addr, addr.BitLen()).String()) + " for this one address"
			}
			l.errorf(elemRange(a.Expr, i), "Invalid "+a.Name,
				"%q is not a CIDR prefix; use %s", s, hint)
			ok = false
		case p.Masked() != p:
			l.errorf(elemRange(a.Expr, i), "Invalid "+a.Name,
				"%q has bits set beyond its /%d; use %q", s, p.Bits(), p.Masked().String())
			ok = false
		default:
			out = append(out, p)
		}
	}
	return out, ok
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

// warnExposed warns, when host protection is off, that a listen address is not
// loopback: a container reaches every address of its host through the runner network's
// gateway, so a listener on one (or on all, "0.0.0.0", ":8080") is reachable from inside
// every bridge plugin.
func (l *loader) warnExposed(attrs hcl.Attributes, name, addr, what string) {
	a := attrs[name]
	if a == nil {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "localhost" {
		return
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		return
	}
	l.diags = append(l.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  "Listener reachable from plugins",
		Detail: fmt.Sprintf("%s = %q is not a loopback address and protect_host = false: from inside their containers "+
			"plugins reach every address of the host but loopback, so they can reach %s. Set protect_host = true, "+
			"listen on loopback, or firewall the runner network off it", name, addr, what),
		Subject: a.Expr.Range().Ptr(),
	})
}

// resolve makes p absolute relative to the root file's directory.
func (l *loader) resolve(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(l.rootDir, p)
}
