package config

import (
	"cmp"
	"net/url"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// BuiltinKV is the only builtin service: a small persistent key-value store under state_dir.
const BuiltinKV = "kv"

var serviceSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "builtin"},
		{Name: "url"},
		{Name: "headers"},
		{Name: "env"},
	},
}

// decodeService decodes a service block: exactly one of builtin, url or env; headers only
// with url.
func (l *loader) decodeService(b *hcl.Block) *Service {
	s := &Service{Name: b.Labels[0], DefRange: b.DefRange}
	content, diags := b.Body.Content(serviceSchema)
	l.append(diags)
	attrs := content.Attributes

	var kinds []*hcl.Attribute
	for _, k := range []string{"builtin", "url", "env"} {
		if a := attrs[k]; a != nil {
			kinds = append(kinds, a)
		}
	}
	slices.SortFunc(kinds, func(a, b *hcl.Attribute) int { return cmp.Compare(a.Range.Start.Byte, b.Range.Start.Byte) })
	switch len(kinds) {
	case 0:
		l.errorf(b.DefRange, "Missing service kind",
			"service %q needs exactly one of builtin, url or env", s.Name)
	case 1:
	default:
		l.errorf(kinds[1].NameRange, "Conflicting service kinds",
			"service %q sets both %s and %s; use exactly one of builtin, url or env", s.Name, kinds[0].Name, kinds[1].Name)
	}

	l.oneOf(attrs, "builtin", &s.Builtin, BuiltinKV)

	var raw string
	if a := l.str(attrs, "url", &raw); a != nil {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			l.errorf(a.Expr.Range(), "Invalid url",
				"%q is not an absolute http or https URL; use e.g. %q", raw, "http://127.0.0.1:9000")
		} else {
			s.URL = raw
		}
	}

	if a := l.strMap(attrs, "headers", &s.Headers); a != nil {
		if attrs["url"] == nil {
			l.errorf(a.NameRange, "Unexpected headers", "headers are only allowed in a service with url")
		}
		l.checkHeaders(a, s.Headers)
	}

	if a := l.strMap(attrs, "env", &s.Env); a != nil {
		l.checkEnv(a, s.Env)
	}
	return s
}

// checkHeaders rejects header names that are not HTTP tokens and values that would break
// the request (a file() that ends in a newline: use trimspace(file(...))).
func (l *loader) checkHeaders(a *hcl.Attribute, headers map[string]string) {
	for _, k := range sortedKeys(headers) {
		if !isToken(k) {
			l.errorf(keyRange(a.Expr, k), "Invalid header name",
				"%q is not an HTTP header name; use letters, digits and \"-\"", k)
		}
		if strings.ContainsAny(headers[k], "\r\n\x00") {
			l.errorf(keyRange(a.Expr, k), "Invalid header value",
				"the value of %s contains a line break; use trimspace(file(...))", k)
		}
	}
}

// checkEnv rejects names that cannot be environment variables and names the runner sets.
func (l *loader) checkEnv(a *hcl.Attribute, env map[string]string) {
	for _, k := range sortedKeys(env) {
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			l.errorf(keyRange(a.Expr, k), "Invalid env name",
				"%q cannot be an environment variable name; use e.g. FEATURE_X", k)
		case k == "PORT" || strings.HasPrefix(k, "XCORE_"):
			l.errorf(keyRange(a.Expr, k), "Reserved env name",
				"%s is set by the runner; use a name other than PORT and XCORE_*", k)
		case strings.ContainsRune(env[k], 0):
			l.errorf(keyRange(a.Expr, k), "Invalid env value", "the value of %s contains a NUL byte", k)
		}
	}
}

// serviceEnvName is the env var prefix of a service in a plugin: upper-cased, "-" → "_".
func serviceEnvName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// checkServiceEnvNames rejects two services whose NAME_URL variables would collide
// ("a-b" and "a_b").
func (l *loader) checkServiceEnvNames(blocks hcl.Blocks) {
	seen := map[string]*hcl.Block{}
	for _, b := range blocks {
		env := serviceEnvName(b.Labels[0])
		prev, ok := seen[env]
		if !ok {
			seen[env] = b
			continue
		}
		if prev.Labels[0] != b.Labels[0] { // same name is reported as a duplicate
			l.errorf(b.LabelRanges[0], "Conflicting service name",
				"services %q and %q both become %s_URL; rename one (previous definition was at %s)",
				prev.Labels[0], b.Labels[0], env, at(prev.DefRange))
		}
	}
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
