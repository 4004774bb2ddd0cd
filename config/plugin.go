package config

import (
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

var pluginSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "image"},
		{Name: "build"},
		{Name: "port"},
		{Name: "command"},
		{Name: "env"},
		{Name: "services"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: blockSupervisor},
	},
}

// decodePlugin decodes a plugin block over the supervisor defaults. Services must already
// be declared (l.services).
func (l *loader) decodePlugin(b *hcl.Block) *Plugin {
	p := &Plugin{Name: b.Labels[0], DefRange: b.DefRange, Supervisor: defaultSupervisor()}
	content, diags := b.Body.Content(pluginSchema)
	l.append(diags)
	attrs := content.Attributes

	l.nonEmpty(attrs, "image", &p.Image, `"xcore-examples/hello:latest"`)
	var build string
	if l.nonEmpty(attrs, "build", &build, `"examples/hello"`) != nil {
		p.Build = filepath.Clean(build)
		if !filepath.IsAbs(build) {
			dir, err := filepath.Abs(filepath.Dir(b.DefRange.Filename))
			if err != nil {
				dir = l.rootDir
			}
			p.Build = filepath.Join(dir, build)
		}
	}
	if build := attrs["build"]; build != nil && l.swarm {
		l.errorf(build.NameRange, "Build not available with backend swarm",
			"plugin %q: an image built from a folder would exist on the manager only; build it, then load it on every node (docker save | docker load) or push it to a registry, and use image", p.Name)
	}
	if l.swarm && len(p.Name) > MaxSwarmPluginName {
		l.errorf(b.LabelRanges[0], "Plugin name too long for backend swarm",
			"%q has %d characters; with backend swarm a plugin name has at most %d (its service, xcore-<plugin>-<generation>-<runner id>, may have 63)", p.Name, len(p.Name), MaxSwarmPluginName)
	}
	switch image, build := attrs["image"], attrs["build"]; {
	case image == nil && build == nil:
		l.errorf(b.DefRange, "Missing image",
			"plugin %q needs image (an image reference) or build (a folder with a Dockerfile)", p.Name)
	case image != nil && build != nil:
		l.errorf(build.NameRange, "Conflicting image and build",
			"plugin %q sets both image and build; use one of them", p.Name)
	}

	if attrs["port"] == nil {
		l.errorf(b.DefRange, "Missing port",
			"plugin %q needs port, the port it serves HTTP on (1 to 65535)", p.Name)
	} else {
		integer(&l.decoder, attrs, "port", &p.Port, 1, 65535)
	}

	if l.strList(attrs, "command", &p.Command) != nil && len(p.Command) == 0 {
		p.Command = nil // [] means the image's default, like no command
	}
	if a := l.strMap(attrs, "env", &p.Env); a != nil {
		l.checkEnv(a, p.Env)
	}
	if a := l.strList(attrs, "services", &p.Services); a != nil {
		l.checkServiceRefs(a, p.Services)
	}

	if sb := l.single(content.Blocks.OfType(blockSupervisor)); sb != nil {
		l.decodeSupervisor(sb, p.Name, &p.Supervisor)
	}
	return p
}

// checkServiceRefs checks that every name in services is a declared service, once.
func (l *loader) checkServiceRefs(a *hcl.Attribute, names []string) {
	for i, name := range names {
		if _, ok := l.services[name]; !ok {
			l.errorf(elemRange(a.Expr, i), "Unknown service",
				"service %q is not defined; use one of: %s", name, l.serviceNames())
			continue
		}
		if j := slices.Index(names, name); j < i {
			l.errorf(elemRange(a.Expr, i), "Duplicate service reference",
				"service %q is listed twice; list each service once", name)
		}
	}
}

func (l *loader) serviceNames() string {
	if len(l.services) == 0 {
		return "(none defined)"
	}
	names := make([]string, 0, len(l.services))
	for n := range l.services {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
