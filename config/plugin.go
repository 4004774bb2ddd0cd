package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/xcore/runner/registry"
)

var pluginSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "image"},
		{Name: "pull"},
		{Name: "registry_poll"},
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
	p := &Plugin{Name: b.Labels[0], DefRange: b.DefRange, Supervisor: defaultSupervisor(), Pull: PullMissing, RegistryPoll: -1}
	content, diags := b.Body.Content(pluginSchema)
	l.append(diags)
	attrs := content.Attributes

	if a := l.nonEmpty(attrs, "image", &p.Image, `"xcore-examples/hello:latest"`); a != nil {
		l.imageRef(a, p)
	}
	l.oneOf(attrs, "pull", &p.Pull, PullMissing, PullAlways, PullNever)
	l.durationOrOff(attrs, "registry_poll", &p.RegistryPoll)
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
	case build != nil:
		p.Pull, p.RegistryPoll = PullNever, 0 // built here: there is no registry to pull from
		for _, n := range []string{"pull", "registry_poll"} {
			if a := attrs[n]; a != nil {
				l.errorf(a.NameRange, "Unexpected "+n,
					"plugin %q is built from a folder: its image is local and never pulled; %s applies to image = \"repo:tag\"", p.Name, n)
			}
		}
	}
	l.checkFollow(attrs, p)

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

// imageRef checks the image reference as the engine will parse it (repo:tag,
// repo@sha256:…, repo:tag@sha256:…; short Docker Hub names are fine).
func (l *loader) imageRef(a *hcl.Attribute, p *Plugin) {
	if _, err := registry.Parse(p.Image); err != nil {
		l.errorf(a.Expr.Range(), "Invalid image",
			"%v; use e.g. \"team/hello:1.4\", \"registry.example.com/team/hello@sha256:<64 hex>\" or \"hello\" (Docker Hub, :latest)", err)
		p.Image = ""
	}
}

// checkFollow warns about a registry_poll that cannot do anything: a pinned digest never
// moves, and pull = "never" never pulls what moved.
func (l *loader) checkFollow(attrs hcl.Attributes, p *Plugin) {
	a := attrs["registry_poll"]
	if a == nil || p.Image == "" || p.RegistryPoll == 0 {
		return
	}
	why := ""
	if ref, err := registry.Parse(p.Image); err == nil && ref.Pinned() {
		why = "the image is pinned by digest, and a digest never moves"
	} else if p.Pull == PullNever {
		why = `pull = "never": a moved tag would not be pulled`
	}
	if why != "" {
		l.diags = append(l.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "registry_poll has no effect",
			Detail:   fmt.Sprintf("plugin %q: %s", p.Name, why),
			Subject:  a.Expr.Range().Ptr(),
		})
	}
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
