package hostguard

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Egress is where a container may send traffic that the host forwards (anything but the
// host itself, which is host protection's business). The zero value is "all": no limit
// for the container once registered (see Guard.SetEgress). Its fields match config.Egress, so the backend converts
// with hostguard.Egress(sup.Egress).
type Egress struct {
	// Restrict: only Allow is reachable. False: every destination (Allow is ignored).
	Restrict bool
	// Allow lists the destinations of a restricted container; empty means none. A
	// container's IPv4 address gets the IPv4 prefixes, its IPv6 address the IPv6 ones.
	Allow []netip.Prefix
}

// Common policies.
var (
	EgressAll  = Egress{}
	EgressNone = Egress{Restrict: true}
)

// AllowOnly is the policy that reaches just these destinations.
func AllowOnly(prefixes ...netip.Prefix) Egress {
	return Egress{Restrict: true, Allow: prefixes}
}

// String is how the setting is written in plugins.hcl: "all", "none" or the list.
func (e Egress) String() string {
	switch {
	case !e.Restrict:
		return "all"
	case len(e.Allow) == 0:
		return "none"
	}
	s := make([]string, len(e.Allow))
	for i, p := range e.Allow {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// destinations returns the prefixes of e that apply to a source address of addr's
// family, masked, without duplicates and without a prefix that another one contains:
// the kernel refuses overlapping intervals in one set, and a contained prefix adds
// nothing. Ordered, so equal policies give equal element lists.
func (e Egress) destinations(addr netip.Addr) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range e.Allow {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid prefix %q", p)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 is 10.0.0.0/8
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if p.Addr().Is4() == addr.Is4() {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits() // the wider one first, so it swallows the narrower
	})
	kept := out[:0]
	for _, p := range out {
		if n := len(kept); n > 0 && kept[n-1].Contains(p.Addr()) {
			continue // inside the previous (sorted by address, prefixes nest or are apart)
		}
		kept = append(kept, p)
	}
	return kept, nil
}
