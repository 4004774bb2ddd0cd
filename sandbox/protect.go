package sandbox

import (
	"net/netip"
	"strings"
)

// Egress says where an instance may send what the host forwards for it: anything but
// the host itself, which is host protection's business. The zero value is "all".
type Egress struct {
	Restrict bool           // false: every destination (Allow is ignored)
	Allow    []netip.Prefix // with Restrict: the only destinations; empty: none
}

// String is the setting as plugins.hcl writes it: "all", "none" or the list.
func (e Egress) String() string {
	switch {
	case !e.Restrict:
		return "all"
	case len(e.Allow) == 0:
		return "none"
	}
	s := make([]string, len(e.Allow))
	for i, p := range e.Allow {
		s[i] = `"` + p.String() + `"`
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// Protection is what the runner asks a backend to enforce on its network while it runs:
// instances reach the host only at the sidecar, and each plugin's instances send what
// the host forwards only where its Egress allows.
type Protection struct {
	// ProtectHost: instances reach the host only at Sidecar, and with replies to
	// connections the host opened. False (runner { protect_host = false }): egress only.
	ProtectHost bool
	// Sidecar lists the host's TCP endpoints instances may reach: the runner's services
	// sidecar on the network's gateway.
	Sidecar []netip.AddrPort
	// Egress is the policy of each configured plugin, for its instances that run
	// already (a previous runner's, to adopt) and those it starts. A plugin's latest
	// policy wins over the Spec.Egress of an instance started before it changed.
	Egress map[string]Egress
}

// Protected is what a backend enforces of a Protection.
type Protected struct {
	Host   bool   // instances reach the host only at the sidecar
	Egress bool   // egress limits other than "all" are enforced
	Rules  string // where the rules live, for humans: "nftables table inet xcore-<id>"
	// Unavailable names the promise that cannot be kept here and why, in words an
	// operator acts on; "" when everything asked for is in force.
	Unavailable string
}
