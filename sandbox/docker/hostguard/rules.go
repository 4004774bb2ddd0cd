package hostguard

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The runner's table, as `nft list table inet xcore-<id>` shows it (ProtectHost true,
// bridge br-x, sidecar 172.18.0.1:41000):
//
//	table inet xcore-<id> {
//		set known4 { type ipv4_addr }                        # every registered container, "all" included
//		set restrict4 { type ipv4_addr }                     # containers with egress none or a list
//		set allow4 { type ipv4_addr . ipv4_addr; flags interval }  # container . allowed destination
//		set known6 { type ipv6_addr }
//		set restrict6 { type ipv6_addr }
//		set allow6 { type ipv6_addr . ipv6_addr; flags interval }
//		chain input {
//			type filter hook input priority filter; policy accept;
//			iifname != "br-x" return
//			ct state established,related ct direction reply accept
//			meta l4proto tcp ip daddr 172.18.0.1 tcp dport 41000 accept
//			icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
//			counter drop
//		}
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname != "br-x" return
//			ct state established,related ct direction reply accept
//			ct status dnat counter drop       # a port the host publishes is a host service too
//			ip saddr != @known4 counter drop  # not registered yet: fail closed
//			ip6 saddr != @known6 counter drop
//			ip saddr . ip daddr @allow4 accept
//			ip saddr @restrict4 counter drop
//			ip6 saddr . ip6 daddr @allow6 accept
//			ip6 saddr @restrict6 counter drop
//		}
//	}
//
// A container is registered (known4/6) by SetEgress, "all" included, once the backend
// knows its address. Until then — between its start and that call — whatever it sends
// through the host is dropped: the start-up window fails closed. The input chain does not
// ask: an unregistered container reaches the sidecar like any other, and nothing else.
//
// Every accept only ends OUR chain: other tables (Docker's) still see the packet and may
// drop it. Only our drops are final. So the table can never open what Docker closes.

// Chain and set names inside the runner's table.
const (
	chainInput    = "input"
	chainForward  = "forward"
	setKnown4     = "known4"
	setKnown6     = "known6"
	setRestrict4  = "restrict4"
	setAllow4     = "allow4"
	setRestrict6  = "restrict6"
	setAllow6     = "allow6"
	tablePrefix   = "xcore-"
	probeTable    = "xcore-probe"
	ctDirReply    = 1    // IP_CT_DIR_REPLY
	ipsDstNAT     = 0x20 // IPS_DST_NAT: the connection's destination was rewritten (DNAT)
	icmpv6NS      = 135  // nd-neighbor-solicit
	icmpv6NA      = 136  // nd-neighbor-advert
	offsetV4Saddr = 12
	offsetV4Daddr = 16
	offsetV6Saddr = 8
	offsetV6Daddr = 24
)

// Registers as nft uses them: reg 1 is the first 128-bit register (the 32-bit registers
// 8..11); a concatenation puts its second field right after the first, in 32-bit
// register 9 for an IPv4 address and in 128-bit register 2 for an IPv6 one.
const (
	reg1     = 1
	reg2     = 2
	reg32_01 = 9
)

// sets are the runner table's named sets, as values to add elements to.
type sets struct {
	known4, restrict4, allow4, known6, restrict6, allow6 *nftables.Set
}

// newSets names the sets. Their IDs (which rules of the same batch refer to) are set
// here: AddSet would otherwise draw them from a package-level counter that v0.3.0
// increments without a lock, a data race between two Installs (fixed after v0.3.0 by
// google/nftables#307). An ID only has to be unique within its batch.
func newSets(t *nftables.Table) sets {
	return sets{
		restrict4: &nftables.Set{Table: t, ID: 1, Name: setRestrict4, KeyType: nftables.TypeIPAddr},
		allow4: &nftables.Set{Table: t, ID: 2, Name: setAllow4, Interval: true, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)},
		restrict6: &nftables.Set{Table: t, ID: 3, Name: setRestrict6, KeyType: nftables.TypeIP6Addr},
		allow6: &nftables.Set{Table: t, ID: 4, Name: setAllow6, Interval: true, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr)},
		known4: &nftables.Set{Table: t, ID: 5, Name: setKnown4, KeyType: nftables.TypeIPAddr},
		known6: &nftables.Set{Table: t, ID: 6, Name: setKnown6, KeyType: nftables.TypeIP6Addr},
	}
}

// writeTable queues the whole table: sets, chains, rules, and the initial egress
// elements. The caller queues what comes before (the replace idiom) and flushes.
func writeTable(c *nftables.Conn, t *nftables.Table, s sets, cfg Config, initial []egressElems) error {
	c.AddTable(t)
	for _, set := range []*nftables.Set{s.known4, s.restrict4, s.allow4, s.known6, s.restrict6, s.allow6} {
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("set %s: %w", set.Name, err)
		}
	}
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	rule := func(ch *nftables.Chain, comment string, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		r := &nftables.Rule{Table: t, Chain: ch, Exprs: all}
		if comment != "" {
			r.UserData = userdata.AppendString(nil, userdata.TypeComment, comment)
		}
		c.AddRule(r)
	}
	bridge := cfg.Network.Bridge

	if cfg.ProtectHost {
		in := c.AddChain(&nftables.Chain{
			Name: chainInput, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
		})
		rule(in, "", notFrom(bridge), verdict(expr.VerdictReturn))
		rule(in, "replies to connections the host opened", replyTraffic(), verdict(expr.VerdictAccept))
		for _, ap := range cfg.Sidecar {
			rule(in, "the runner's sidecar", tcpTo(ap), verdict(expr.VerdictAccept))
		}
		rule(in, "IPv6 neighbour discovery (ARP's job in IPv4)", ndp(), verdict(expr.VerdictAccept))
		rule(in, "xcore: plugins reach no other host port", counted(expr.VerdictDrop))
	}

	rule(fwd, "", notFrom(bridge), verdict(expr.VerdictReturn))
	rule(fwd, "replies to connections opened to a plugin", replyTraffic(), verdict(expr.VerdictAccept))
	if cfg.ProtectHost {
		rule(fwd, "xcore: a port the host forwards (DNAT) is a host service", dnatted(), counted(expr.VerdictDrop))
	}
	rule(fwd, "xcore: not registered yet", family(unix.NFPROTO_IPV4), notMember(s.known4, offsetV4Saddr, 4), counted(expr.VerdictDrop))
	rule(fwd, "xcore: not registered yet", family(unix.NFPROTO_IPV6), notMember(s.known6, offsetV6Saddr, 16), counted(expr.VerdictDrop))
	rule(fwd, "", family(unix.NFPROTO_IPV4), pair(s.allow4, offsetV4Saddr, offsetV4Daddr, 4), verdict(expr.VerdictAccept))
	rule(fwd, "xcore: egress limit", family(unix.NFPROTO_IPV4), member(s.restrict4, offsetV4Saddr, 4), counted(expr.VerdictDrop))
	rule(fwd, "", family(unix.NFPROTO_IPV6), pair(s.allow6, offsetV6Saddr, offsetV6Daddr, 16), verdict(expr.VerdictAccept))
	rule(fwd, "xcore: egress limit", family(unix.NFPROTO_IPV6), member(s.restrict6, offsetV6Saddr, 16), counted(expr.VerdictDrop))

	for _, e := range initial {
		if err := e.add(c, s, true); err != nil {
			return err
		}
	}
	return nil
}

// notFrom matches packets that did not come in on the bridge.
func notFrom(bridge string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ifname(bridge)},
	}
}

// replyTraffic matches the reply direction of a tracked connection (and ICMP errors
// about it): traffic of connections the other side opened. A connection a container
// opened is never a reply, whatever state it reached.
func replyTraffic() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(0)},
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{ctDirReply}},
	}
}

// dnatted matches connections whose destination was rewritten before routing.
func dnatted() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(ipsDstNAT), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(0)},
	}
}

// tcpTo matches TCP to one address and port of the host.
func tcpTo(ap netip.AddrPort) []expr.Any {
	a := ap.Addr().Unmap()
	off, fam := uint32(offsetV4Daddr), byte(unix.NFPROTO_IPV4)
	if a.Is6() {
		off, fam = offsetV6Daddr, unix.NFPROTO_IPV6
	}
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, ap.Port())
	return append(family(fam),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: a.AsSlice()},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: port},
	)
}

// ndp matches IPv6 neighbour solicitations and advertisements: without them a container
// cannot resolve its gateway, so neither the sidecar nor any egress would work over IPv6.
func ndp() []expr.Any {
	return append(family(unix.NFPROTO_IPV6),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: reg1, FromData: []byte{icmpv6NS}, ToData: []byte{icmpv6NA}},
	)
}

func family(f byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f}},
	}
}

// member matches a source address in set s.
func member(s *nftables.Set, off, n uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID},
	}
}

// notMember matches a source address that is not in set s.
func notMember(s *nftables.Set, off, n uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, Invert: true},
	}
}

// pair matches source . destination in the concatenated set s.
func pair(s *nftables.Set, src, dst, n uint32) []expr.Any {
	second := uint32(reg32_01)
	if n == 16 {
		second = reg2
	}
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: src, Len: n},
		&expr.Payload{DestRegister: second, Base: expr.PayloadBaseNetworkHeader, Offset: dst, Len: n},
		&expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID},
	}
}

func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k}}
}

// counted is a verdict with a counter in front: `nft list table` then shows what the
// runner's rules dropped.
func counted(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: k}}
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes, NUL padded.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// native32 is a 32-bit value in host byte order, as ct state and ct status are loaded.
func native32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

// egressElems are the set elements that carry one address's egress policy (its
// registration aside: see add).
type egressElems struct {
	addr     netip.Addr
	restrict bool
	allow    []nftables.SetElement
}

// elemsFor computes the elements of policy e for addr (already unmapped).
func elemsFor(addr netip.Addr, e Egress) (egressElems, error) {
	out := egressElems{addr: addr, restrict: e.Restrict}
	if !e.Restrict {
		return out, nil
	}
	dsts, err := e.destinations(addr)
	if err != nil {
		return out, err
	}
	for _, p := range dsts {
		first, last := p.Masked().Addr(), lastAddr(p)
		out.allow = append(out.allow, nftables.SetElement{
			Key:    append(addr.AsSlice(), first.AsSlice()...),
			KeyEnd: append(addr.AsSlice(), last.AsSlice()...),
		})
	}
	return out, nil
}

func (e egressElems) sets(s sets) (known, restrict, allow *nftables.Set) {
	if e.addr.Is4() {
		return s.known4, s.restrict4, s.allow4
	}
	return s.known6, s.restrict6, s.allow6
}

// add queues the elements, with register also the address's registration (known4/6);
// del queues their removal, with unregister the registration's too.
func (e egressElems) add(c *nftables.Conn, s sets, register bool) error {
	return e.apply(s, register, c.SetAddElements)
}

func (e egressElems) del(c *nftables.Conn, s sets, unregister bool) error {
	return e.apply(s, unregister, c.SetDeleteElements)
}

func (e egressElems) apply(s sets, known bool, op func(*nftables.Set, []nftables.SetElement) error) error {
	registry, restrict, allow := e.sets(s)
	if known {
		if err := op(registry, []nftables.SetElement{{Key: e.addr.AsSlice()}}); err != nil {
			return fmt.Errorf("registration of %s: %w", e.addr, err)
		}
	}
	if !e.restrict {
		return nil
	}
	if err := op(restrict, []nftables.SetElement{{Key: e.addr.AsSlice()}}); err != nil {
		return fmt.Errorf("egress of %s: %w", e.addr, err)
	}
	if len(e.allow) > 0 {
		if err := op(allow, e.allow); err != nil {
			return fmt.Errorf("egress of %s: %w", e.addr, err)
		}
	}
	return nil
}

// lastAddr is the last address of prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
