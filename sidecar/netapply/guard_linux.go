package netapply

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// The guard's chains (see Guard). Their priorities are the ip family's
// named ones: raw (-300) runs before conntrack looks at the packet, dstnat
// (-100) is where a destination is translated, filter (0) the usual place
// to drop.
const (
	guardRaw        = "raw"
	guardPrerouting = "prerouting"
	guardInput      = "input"
	guardComment    = "kubevirt-imds: through 169.254.169.254 the guest reaches the metadata service only"

	// ipsDstNAT is IPS_DST_NAT from linux/netfilter/nf_conntrack_common.h:
	// the connection's destination was translated.
	ipsDstNAT = 0x20
)

var guardTable = &nftables.Table{Name: network.GuardTable, Family: nftables.TableFamilyIPv4}

// nftChain is a base chain with the expressions of its rules, in order.
type nftChain struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

func guardBaseChain(name string, hook nftables.ChainHook, prio nftables.ChainPriority, typ nftables.ChainType) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     name,
		Table:    guardTable,
		Hooknum:  nftables.ChainHookRef(hook),
		Priority: nftables.ChainPriorityRef(prio),
		Type:     typ,
		Policy:   &accept,
	}
}

// guardSpec is GuardTable as ReplaceGuard builds it for g, chains in the
// order they are created.
func guardSpec(g network.Guard) []nftChain {
	notLoopback := func() []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")},
		}
	}
	// ip saddr (offset 12) or ip daddr (16) is Address.
	ipIs := func(offset uint32) []expr.Any {
		return []expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network.Address.Addr().AsSlice()},
		}
	}
	toService := func() []expr.Any { return append(notLoopback(), ipIs(16)...) }
	// from is toService for one ingress interface.
	from := func(name string) []expr.Any {
		return append([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
		}, ipIs(16)...)
	}
	dport := func(port int) []expr.Any {
		return []expr.Any{
			// meta l4proto, as nft writes "tcp dport": the protocol of the
			// transport header the next load reads.
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(port)},
		}
	}
	// ether saddr (offset 6) or daddr (0) is LinkName's MAC; meta iiftype
	// ether first, as nft adds it, so a device without an Ethernet header
	// never matches.
	etherIs := func(offset uint32) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint16(nil, unix.ARPHRD_ETHER)},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: offset, Len: 6},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: bytes.Clone(g.MAC)},
		}
	}
	drop := append(toService(), &expr.Verdict{Kind: expr.VerdictDrop})
	input := guardBaseChain(guardInput, unix.NF_INET_LOCAL_IN, 0, nftables.ChainTypeFilter)
	var accept [][]expr.Any
	for _, name := range g.Ingress {
		if !g.Redirects() {
			accept = append(accept, concat(from(name), dport(g.ServicePort), []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}))
			continue
		}
		accept = append(accept, concat(from(name), dport(g.ListenPort), []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, ipsDstNAT), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}))
	}
	filter := nftChain{chain: input, rules: append(accept, drop)}
	if !g.Redirects() {
		return []nftChain{filter}
	}

	untrackTo := concat(
		[]expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(network.LinkName)},
		},
		ipIs(16), etherIs(0), []expr.Any{&expr.Notrack{}})
	untrackFrom := concat(ipIs(12), etherIs(6), []expr.Any{&expr.Notrack{}})
	dnat := concat(toService(), dport(g.ServicePort), []expr.Any{
		&expr.Immediate{Register: 1, Data: network.Address.Addr().AsSlice()},
		&expr.Immediate{Register: 2, Data: be16(g.ListenPort)},
		// The kernel reports the max registers as the min ones when only
		// those were given; spelling them out keeps the comparison exact.
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 2, RegProtoMax: 2, Specified: true},
	})
	return []nftChain{
		{chain: guardBaseChain(guardRaw, unix.NF_INET_PRE_ROUTING, -300, nftables.ChainTypeFilter), rules: [][]expr.Any{untrackTo, untrackFrom}},
		{chain: guardBaseChain(guardPrerouting, unix.NF_INET_PRE_ROUTING, -100, nftables.ChainTypeNAT), rules: [][]expr.Any{dnat}},
		filter,
	}
}

// concat concatenates expression lists into a new one.
func concat(parts ...[]expr.Any) []expr.Any {
	var all []expr.Any
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

func be16(port int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(port)) }

func validateGuard(g network.Guard) error {
	for _, p := range []int{g.ServicePort, g.ListenPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("guard %s: port %d out of range", g, p)
		}
	}
	if g.Redirects() != (len(g.MAC) == 6) {
		return fmt.Errorf("guard %s: a 6-byte MAC goes with a redirect, and only with one", g)
	}
	if len(g.Ingress) == 0 {
		return fmt.Errorf("guard %s: no ingress interface", g)
	}
	for _, name := range g.Ingress {
		if name == "" || len(name) >= unix.IFNAMSIZ {
			return fmt.Errorf("guard %s: %q is no interface name", g, name)
		}
	}
	return nil
}

// ReplaceGuard implements Netlink like ReplaceRedirect: one transaction
// that the kernel commits atomically, so the old rules hold until the new
// ones do. The table outlives the process that made it.
func (k *Kernel) ReplaceGuard(g network.Guard) error {
	if err := validateGuard(g); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.AddTable(guardTable)
	c.DelTable(guardTable)
	c.AddTable(guardTable)
	comment := userdata.AppendString(nil, userdata.TypeComment, guardComment)
	for _, ch := range guardSpec(g) {
		c.AddChain(ch.chain)
		for _, exprs := range ch.rules {
			c.AddRule(&nftables.Rule{Table: guardTable, Chain: ch.chain, Exprs: exprs, UserData: comment})
		}
	}
	return c.Flush()
}

// observeGuard reads GuardTable. A kernel without nf_tables has none, and
// then ReplaceGuard fails: the guard is always wanted.
func observeGuard() (*network.Guard, error) {
	chains, rules, found, err := readTable(guardTable)
	if err != nil || !found {
		return nil, err
	}
	return decodeGuard(chains, rules), nil
}

// decodeGuard recognises what ReplaceGuard builds and nothing else: any
// difference yields the zero Guard, which the plan replaces.
func decodeGuard(chains []*nftables.Chain, rules map[string][]*nftables.Rule) *network.Guard {
	g, ok := guardParams(rules)
	if !ok || !isTable(guardSpec(g), chains, rules) {
		return &network.Guard{}
	}
	return &g
}

// guardParams reads the ports and MAC where guardSpec puts them; isTable
// then demands that the rest is exactly what it would build for them.
func guardParams(rules map[string][]*nftables.Rule) (network.Guard, bool) {
	port := func(chain string, i int) (int, bool) {
		if len(rules[chain]) == 0 || len(rules[chain][0].Exprs) <= i {
			return 0, false
		}
		c, ok := rules[chain][0].Exprs[i].(*expr.Cmp)
		if !ok || len(c.Data) != 2 {
			return 0, false
		}
		return int(binary.BigEndian.Uint16(c.Data)), true
	}
	// The destination port is the eighth expression of the first rule of
	// the input and the prerouting chain, the MAC that of the raw chain;
	// each input rule but the last (the drop) names an ingress interface in
	// its second.
	const dportAt, macAt, ingressAt = 7, 7, 1
	listen, ok := port(guardInput, dportAt)
	if !ok {
		return network.Guard{}, false
	}
	var ingress []string
	for _, r := range rules[guardInput][:len(rules[guardInput])-1] {
		if len(r.Exprs) <= ingressAt {
			return network.Guard{}, false
		}
		name, ok := r.Exprs[ingressAt].(*expr.Cmp)
		if !ok {
			return network.Guard{}, false
		}
		ingress = append(ingress, string(bytes.TrimRight(name.Data, "\x00")))
	}
	if _, nat := rules[guardPrerouting]; !nat {
		return network.Guard{ServicePort: listen, ListenPort: listen, Ingress: ingress}, true
	}
	service, ok := port(guardPrerouting, dportAt)
	if !ok || len(rules[guardRaw]) == 0 || len(rules[guardRaw][0].Exprs) <= macAt {
		return network.Guard{}, false
	}
	mac, ok := rules[guardRaw][0].Exprs[macAt].(*expr.Cmp)
	if !ok || len(mac.Data) != 6 {
		return network.Guard{}, false
	}
	return network.Guard{ServicePort: service, ListenPort: listen, MAC: net.HardwareAddr(bytes.Clone(mac.Data)), Ingress: ingress}, true
}
