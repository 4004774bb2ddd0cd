package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// MaxReplicas bounds supervisor { replicas }: instances of one plugin.
const MaxReplicas = 64

// minMemory is Docker's minimum memory limit.
const minMemory = 6 * units.MiB

// Bounds of max_response_header: a status line and the usual fields fit in 1 KiB;
// above 64 MiB (times max_concurrent) it no longer protects the runner's memory.
const (
	minResponseHeader = units.KiB
	maxResponseHeader = 64 * units.MiB
)

// defaultUser is the non-root user plugins run as unless the supervisor block says otherwise.
const defaultUser = "65532:65532"

var supervisorSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "cpus"},
		{Name: "memory"},
		{Name: "pids"},
		{Name: "network"},
		{Name: "read_only"},
		{Name: "user"},
		{Name: "allow_root"},
		{Name: "runtime"},
		{Name: "start_timeout"},
		{Name: "request_timeout"},
		{Name: "stop_timeout"},
		{Name: "drain_timeout"},
		{Name: "max_concurrent"},
		{Name: "max_body"},
		{Name: "replicas"},
		{Name: "egress"},
		{Name: "max_response_header"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: blockRestart},
		{Type: blockHealth},
		{Type: blockPlacement},
	},
}

var placementSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "constraints"},
		{Name: "spread"},
	},
}

var restartSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "policy"},
		{Name: "attempts"},
		{Name: "window"},
		{Name: "backoff"},
		{Name: "max_backoff"},
	},
}

var healthSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "path"},
		{Name: "interval"},
		{Name: "timeout"},
		{Name: "failures"},
	},
}

// defaultSupervisor is what a plugin gets without a supervisor block: limited and hardened.
func defaultSupervisor() Supervisor {
	return Supervisor{
		CPUs:           1,
		Memory:         256 * units.MiB,
		Pids:           256,
		Network:        NetworkBridge,
		ReadOnly:       true,
		User:           defaultUser,
		StartTimeout:   30 * time.Second,
		RequestTimeout: 30 * time.Second,
		StopTimeout:    10 * time.Second,
		DrainTimeout:   30 * time.Second,
		MaxConcurrent:  256,
		MaxBody:        10 * units.MiB,
		Replicas:       1,
		// nginx's buffer for an upstream's headers is 4-8 KiB; 1 MiB accepts any plugin
		// that means well and keeps max_concurrent of them at 256 MiB.
		MaxResponseHeader: units.MiB,
		Restart: Restart{
			Policy:     RestartOnFailure,
			Attempts:   5,
			Window:     5 * time.Minute,
			Backoff:    250 * time.Millisecond,
			MaxBackoff: 30 * time.Second,
		},
		Health: Health{ // Path "": TCP connect probe
			Interval: 5 * time.Second,
			Timeout:  time.Second,
			Failures: 3,
		},
	}
}

// decodeSupervisor merges a supervisor block into s (the defaults) field by field.
func (l *loader) decodeSupervisor(b *hcl.Block, plugin string, s *Supervisor) {
	content, diags := b.Body.Content(supervisorSchema)
	l.append(diags)
	attrs := content.Attributes

	var cpus float64
	if a := l.value(attrs, "cpus", &cpus, "a number"); a != nil {
		if cpus <= 0 || math.IsInf(cpus, 0) || math.IsNaN(cpus) {
			l.errorf(a.Expr.Range(), "Invalid cpus", "got %g; use a number greater than zero, e.g. 0.5", cpus)
		} else {
			s.CPUs = cpus
		}
	}
	l.size(attrs, "memory", &s.Memory, minMemory)
	integer(&l.decoder, attrs, "pids", &s.Pids, 1, math.MaxInt64)
	if a := l.oneOf(attrs, "network", &s.Network, NetworkBridge, NetworkNone); a != nil && l.swarm && s.Network == NetworkNone {
		l.errorf(a.Expr.Range(), "Network none not available with backend swarm",
			"a task on a cluster serves HTTP on its plugin's network; network = \"none\" (a unix socket on the runner's host) needs backend \"docker\"")
	}
	l.boolean(attrs, "read_only", &s.ReadOnly)
	user := l.nonEmpty(attrs, "user", &s.User, strconv.Quote(defaultUser))
	l.boolean(attrs, "allow_root", &s.AllowRoot)
	if a := l.str(attrs, "runtime", &s.Runtime); a != nil && l.swarm && s.Runtime != "" {
		l.errorf(a.Expr.Range(), "Runtime not available with backend swarm",
			"a Swarm service cannot choose an OCI runtime; make %q the default-runtime in every node's daemon.json and remove runtime", s.Runtime)
	}
	l.duration(attrs, "start_timeout", &s.StartTimeout)
	l.duration(attrs, "request_timeout", &s.RequestTimeout)
	l.duration(attrs, "stop_timeout", &s.StopTimeout)
	l.duration(attrs, "drain_timeout", &s.DrainTimeout)
	integer(&l.decoder, attrs, "max_concurrent", &s.MaxConcurrent, 1, math.MaxInt)
	l.size(attrs, "max_body", &s.MaxBody, 1)
	integer(&l.decoder, attrs, "replicas", &s.Replicas, 1, MaxReplicas)
	egress := l.egress(attrs, &s.Egress)
	if egress != nil && l.swarm && s.Egress.Restrict {
		l.diags = append(l.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Egress not enforced with backend swarm",
			Detail:   "the swarm backend cannot filter what a task sends: its node's firewall must (the docker backend enforces egress with host rules)",
			Subject:  egress.Expr.Range().Ptr(),
		})
	}
	if egress != nil && s.Network == NetworkNone && s.Egress.String() != EgressNone {
		// A plugin without a network reaches nothing: a list (or "all") would promise
		// what cannot be. "none" says the same as network = "none" and is accepted.
		written := s.Egress.String() // a list, quoted already
		if len(s.Egress.Allow) == 0 {
			written = strconv.Quote(written)
		}
		l.errorf(egress.Expr.Range(), "Invalid egress",
			"egress = %s has no effect with network = \"none\": the plugin has no network at all; "+
				"remove egress, or use network = \"bridge\"", written)
	}
	if a := l.size(attrs, "max_response_header", &s.MaxResponseHeader, minResponseHeader); a != nil && s.MaxResponseHeader > maxResponseHeader {
		l.errorf(a.Expr.Range(), "Invalid max_response_header", "got %s; use at most %s", units.BytesSize(float64(s.MaxResponseHeader)), units.BytesSize(maxResponseHeader))
	}

	if user != nil && isRoot(s.User) {
		if !s.AllowRoot {
			l.errorf(user.Expr.Range(), "Root user not allowed",
				"user %q is root; use a non-root user such as %q, or set allow_root = true", s.User, defaultUser)
		} else {
			// Allowed, but never silently: `runner up` and `runner validate` print it.
			l.diags = append(l.diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Plugin runs as root",
				Detail: fmt.Sprintf("plugin %q runs as user %q (allow_root = true); its capabilities are still dropped, "+
					"but a container escape would start as root; prefer %q", plugin, s.User, defaultUser),
				Subject: user.Expr.Range().Ptr(),
			})
		}
	}

	if rb := l.single(content.Blocks.OfType(blockRestart)); rb != nil {
		l.decodeRestart(rb, &s.Restart)
	}
	if hb := l.single(content.Blocks.OfType(blockHealth)); hb != nil {
		l.decodeHealth(hb, &s.Health)
	}
	if pb := l.single(content.Blocks.OfType(blockPlacement)); pb != nil {
		l.decodePlacement(pb, &s.Placement)
		if !l.swarm {
			l.diags = append(l.diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Placement ignored",
				Detail:   "placement {} says where a cluster runs the plugin; the docker backend runs every plugin on this host and ignores it",
				Subject:  pb.DefRange.Ptr(),
			})
		}
	}
}

// decodePlacement decodes placement { constraints = [...], spread = "..." }. Constraints
// are Swarm's: "<node attribute> == <value>" or "!=", e.g. "node.labels.tier == plugins"
// or "node.role == worker"; spread names a node label ("node.labels.zone").
func (l *loader) decodePlacement(b *hcl.Block, p *Placement) {
	content, diags := b.Body.Content(placementSchema)
	l.append(diags)
	attrs := content.Attributes
	var raw []string
	if a := l.strList(attrs, "constraints", &raw); a != nil {
		ok := true
		for i, c := range raw {
			if !validConstraint(c) {
				l.errorf(elemRange(a.Expr, i), "Invalid constraint",
					"%q is not a placement constraint; use \"<attribute> == <value>\" or \"!=\", e.g. \"node.labels.tier == plugins\" or \"node.role == worker\"", c)
				ok = false
			}
		}
		if ok && len(raw) > 0 {
			p.Constraints = raw
		}
	}
	var spread string
	if a := l.str(attrs, "spread", &spread); a != nil {
		if strings.HasPrefix(spread, "node.labels.") && len(spread) > len("node.labels.") || strings.HasPrefix(spread, "engine.labels.") && len(spread) > len("engine.labels.") {
			p.Spread = spread
		} else {
			l.errorf(a.Expr.Range(), "Invalid spread", "%q is not a node label; use e.g. \"node.labels.zone\"", spread)
		}
	}
}

// validConstraint: one operator (== or !=) between a non-empty attribute without spaces
// and a non-empty value.
func validConstraint(c string) bool {
	for _, op := range []string{"==", "!="} {
		if k, v, ok := strings.Cut(c, op); ok {
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			return k != "" && v != "" && !strings.ContainsAny(k, " \t") && !strings.Contains(v, "==") && !strings.Contains(v, "!=")
		}
	}
	return false
}

// egressWant is what egress takes, for error details.
const egressWant = `"all", "none" or a list of CIDR prefixes such as ["10.0.0.0/8"]`

// egress decodes "all", "none" or a list of CIDR prefixes (an empty list is "none").
func (l *loader) egress(attrs hcl.Attributes, dst *Egress) *hcl.Attribute {
	a, ok := attrs["egress"]
	if !ok {
		return nil
	}
	val, diags := a.Expr.Value(l.ctx)
	l.append(diags)
	if diags.HasErrors() || !val.IsWhollyKnown() {
		return nil
	}
	switch ty := val.Type(); {
	case val.IsNull():
		l.errorf(a.Expr.Range(), "Invalid egress", "must not be null; use %s", egressWant)
	case ty == cty.String:
		switch s := val.AsString(); s {
		case EgressAll:
			*dst = Egress{}
			return a
		case EgressNone:
			*dst = Egress{Restrict: true}
			return a
		default:
			if _, err := netip.ParsePrefix(s); err == nil {
				l.errorf(a.Expr.Range(), "Invalid egress", "got %q; a CIDR prefix goes in a list: egress = [%q]", s, s)
			} else {
				l.errorf(a.Expr.Range(), "Invalid egress", "got %q; use %s", s, egressWant)
			}
		}
	case ty.IsTupleType() || ty.IsListType():
		var raw []string
		if l.strList(attrs, "egress", &raw) == nil {
			return nil
		}
		if allow, ok := l.prefixes(a, raw); ok {
			*dst = Egress{Restrict: true, Allow: allow}
			return a
		}
	default:
		l.errorf(a.Expr.Range(), "Invalid egress", "must be %s", egressWant)
	}
	return nil
}

// isRoot reports whether a Docker user spec ("uid", "name", "uid:gid", "name:group") is root.
func isRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	if u == "root" {
		return true
	}
	n, err := strconv.ParseUint(u, 10, 32)
	return err == nil && n == 0
}

func (l *loader) decodeRestart(b *hcl.Block, r *Restart) {
	content, diags := b.Body.Content(restartSchema)
	l.append(diags)
	attrs := content.Attributes

	l.oneOf(attrs, "policy", &r.Policy, RestartAlways, RestartOnFailure, RestartNever)
	integer(&l.decoder, attrs, "attempts", &r.Attempts, 1, math.MaxInt)
	l.duration(attrs, "window", &r.Window)
	backoff := l.duration(attrs, "backoff", &r.Backoff)
	maxBackoff := l.duration(attrs, "max_backoff", &r.MaxBackoff)
	if r.MaxBackoff < r.Backoff {
		subject := b.DefRange
		switch {
		case maxBackoff != nil:
			subject = maxBackoff.Expr.Range()
		case backoff != nil:
			subject = backoff.Expr.Range()
		}
		l.errorf(subject, "Invalid max_backoff",
			"max_backoff %s is less than backoff %s; use a max_backoff of at least backoff", r.MaxBackoff, r.Backoff)
	}
}

func (l *loader) decodeHealth(b *hcl.Block, h *Health) {
	content, diags := b.Body.Content(healthSchema)
	l.append(diags)
	attrs := content.Attributes

	var path string
	if a := l.str(attrs, "path", &path); a != nil {
		if !strings.HasPrefix(path, "/") {
			l.errorf(a.Expr.Range(), "Invalid path", "%q must start with \"/\"; use e.g. \"/healthz\"", path)
		} else {
			h.Path = path
		}
	}
	l.duration(attrs, "interval", &h.Interval)
	l.duration(attrs, "timeout", &h.Timeout)
	integer(&l.decoder, attrs, "failures", &h.Failures, 1, math.MaxInt)
}
