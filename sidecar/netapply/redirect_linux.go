package netapply

import (
	"bytes"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// The redirect's chains. -300 is the bridge family's
// "dstnat" priority: the destination is rewritten before any filter chain
// sees the frame, and long before the bridge's FDB lookup, which follows
// the prerouting hook.
const (
	// nfBrPreRouting and nfBrForward are NF_BR_PRE_ROUTING and NF_BR_FORWARD
	// from linux/netfilter_bridge.h, which x/sys does not define.
	nfBrPreRouting nftables.ChainHook = 0
	nfBrForward    nftables.ChainHook = 2

	redirectPrerouting     = "prerouting"
	redirectForward        = "forward"
	redirectPrioPrerouting = -300
	redirectPrioForward    = -200
	redirectComment        = "kubevirt-imds: the guest's packets for 169.254.169.254 go to " + network.LinkName + " only"
)

var redirectTable = &nftables.Table{Name: network.RedirectTable, Family: nftables.TableFamilyBridge}

func redirectChains() (pre, fwd *nftables.Chain) {
	accept := nftables.ChainPolicyAccept
	chain := func(name string, hook nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{
			Name:     name,
			Table:    redirectTable,
			Hooknum:  nftables.ChainHookRef(hook),
			Priority: nftables.ChainPriorityRef(prio),
			Type:     nftables.ChainTypeFilter,
			Policy:   &accept,
		}
	}
	return chain(redirectPrerouting, nfBrPreRouting, redirectPrioPrerouting),
		chain(redirectForward, nfBrForward, redirectPrioForward)
}

// ifname is a device name as meta iifname/oifname load it: IFNAMSIZ bytes,
// NUL-padded, so the comparison is exact.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// redirectExprs returns the expressions of the prerouting and forward rules
// for r (see Redirect).
func redirectExprs(r network.Redirect) (pre, fwd []expr.Any) {
	match := func() []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(r.Port)},
			// ether type ip: only then is the network header IPv4.
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x08, 0x00}},
			// ip daddr: offset 16 of the IPv4 header.
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network.Address.Addr().AsSlice()},
		}
	}
	pre = append(match(),
		&expr.Immediate{Register: 1, Data: bytes.Clone(r.MAC)},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 6},
	)
	fwd = append(match(),
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(network.PeerName)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	return pre, fwd
}

// ReplaceRedirect implements Netlink: add, delete and re-create the table in
// one transaction, which the kernel commits atomically, so the old rules
// hold until the new ones do. The table is not owned by the netlink socket:
// it outlives the sidecar, which adopts it after a restart.
func (k *Kernel) ReplaceRedirect(r network.Redirect) error {
	if len(r.MAC) != 6 || r.Port == "" {
		return fmt.Errorf("redirect %s: needs a port and a 6-byte MAC", r)
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.AddTable(redirectTable)
	c.DelTable(redirectTable)
	c.AddTable(redirectTable)
	pre, fwd := redirectChains()
	c.AddChain(pre)
	c.AddChain(fwd)
	preExprs, fwdExprs := redirectExprs(r)
	comment := userdata.AppendString(nil, userdata.TypeComment, redirectComment)
	c.AddRule(&nftables.Rule{Table: redirectTable, Chain: pre, Exprs: preExprs, UserData: comment})
	c.AddRule(&nftables.Rule{Table: redirectTable, Chain: fwd, Exprs: fwdExprs, UserData: comment})
	return c.Flush()
}

// DeleteRedirect implements Netlink. Adding the table first makes the
// deletion succeed whether or not it existed.
func (k *Kernel) DeleteRedirect() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.AddTable(redirectTable)
	c.DelTable(redirectTable)
	return c.Flush()
}

// redirectSpec is RedirectTable as ReplaceRedirect builds it for r.
func redirectSpec(r network.Redirect) []nftChain {
	pre, fwd := redirectChains()
	preExprs, fwdExprs := redirectExprs(r)
	return []nftChain{{chain: pre, rules: [][]expr.Any{preExprs}}, {chain: fwd, rules: [][]expr.Any{fwdExprs}}}
}

// observeRedirect reads RedirectTable. A kernel without nf_tables has no
// such table: that is only an error once a redirect is wanted, when
// ReplaceRedirect fails.
func observeRedirect() (*network.Redirect, error) {
	chains, rules, found, err := readTable(redirectTable)
	if err != nil || !found {
		return nil, err
	}
	return decodeRedirect(chains, rules), nil
}

// decodeRedirect recognises what ReplaceRedirect builds and nothing else: any
// difference — a chain or rule added by hand, another hook or priority —
// yields the zero Redirect, which the plan replaces.
func decodeRedirect(chains []*nftables.Chain, rules map[string][]*nftables.Rule) *network.Redirect {
	bad := &network.Redirect{}
	// Read the port and the MAC where redirectExprs puts them, then demand
	// that everything else is exactly what it would build for them.
	if len(rules[redirectPrerouting]) == 0 {
		return bad
	}
	pre := rules[redirectPrerouting][0].Exprs
	if len(pre) < 7 {
		return bad
	}
	port, ok1 := pre[1].(*expr.Cmp)
	mac, ok2 := pre[6].(*expr.Immediate)
	if !ok1 || !ok2 || len(mac.Data) != 6 {
		return bad
	}
	r := network.Redirect{Port: string(bytes.TrimRight(port.Data, "\x00")), MAC: net.HardwareAddr(bytes.Clone(mac.Data))}
	if !isTable(redirectSpec(r), chains, rules) {
		return bad
	}
	return &r
}
