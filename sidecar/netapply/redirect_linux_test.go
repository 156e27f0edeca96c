package netapply

import (
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// kernelView is what observeRedirect would read back after ReplaceRedirect(r).
func kernelView(r network.Redirect) ([]*nftables.Chain, map[string][]*nftables.Rule) {
	pre, fwd := redirectChains()
	preExprs, fwdExprs := redirectExprs(r)
	return []*nftables.Chain{pre, fwd}, map[string][]*nftables.Rule{
		pre.Name: {{Table: redirectTable, Chain: pre, Exprs: preExprs}},
		fwd.Name: {{Table: redirectTable, Chain: fwd, Exprs: fwdExprs}},
	}
}

func TestDecodeRedirect(t *testing.T) {
	want := network.Redirect{Port: "tap0", MAC: network.DeriveMAC("uid-1", "k6t-eth0")}
	chains, rules := kernelView(want)
	if got := decodeRedirect(chains, rules); got == nil || !got.Equal(want) {
		t.Fatalf("round trip: %v, want %s", got, want)
	}
	long := network.Redirect{Port: "tapa1b2c3d4e5f", MAC: mac(7)}
	chains, rules = kernelView(long)
	if got := decodeRedirect(chains, rules); got == nil || !got.Equal(long) {
		t.Fatalf("round trip: %v, want %s", got, long)
	}

	tests := []struct {
		name   string
		mutate func([]*nftables.Chain, map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule)
	}{
		{"a chain missing", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			return c[:1], r
		}},
		{"a chain added by hand", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			return append(c, &nftables.Chain{Name: "mine", Table: redirectTable}), r
		}},
		{"another priority", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			c[0].Priority = nftables.ChainPriorityRef(0)
			return c, r
		}},
		{"another hook", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			c[1].Hooknum = nftables.ChainHookRef(nfBrPreRouting)
			return c, r
		}},
		{"a drop policy", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			drop := nftables.ChainPolicyDrop
			c[0].Policy = &drop
			return c, r
		}},
		{"a second rule", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[redirectForward] = append(r[redirectForward], &nftables.Rule{})
			return c, r
		}},
		{"no rule", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[redirectPrerouting] = nil
			return c, r
		}},
		{"the forward rule accepts instead of dropping", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			e := r[redirectForward][0].Exprs
			e[len(e)-1] = &expr.Verdict{Kind: expr.VerdictAccept}
			return c, r
		}},
		{"another address matched", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[redirectPrerouting][0].Exprs[5] = &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{169, 254, 169, 253}}
			return c, r
		}},
		{"the two rules name different ports", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[redirectForward][0].Exprs[1] = &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("tap9")}
			return c, r
		}},
		{"a truncated rule", func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[redirectPrerouting][0].Exprs = r[redirectPrerouting][0].Exprs[:3]
			return c, r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeRedirect(tt.mutate(kernelView(want)))
			if got == nil || got.Port != "" || got.MAC != nil {
				t.Errorf("decoded %v, want the zero Redirect (replace it)", got)
			}
		})
	}
}

func TestRedirectExprsEncode(t *testing.T) {
	pre, fwd := redirectExprs(network.Redirect{Port: "tap0", MAC: mac(1)})
	for _, e := range append(pre, fwd...) {
		if _, err := expr.Marshal(byte(nftables.TableFamilyBridge), e); err != nil {
			t.Errorf("%T: %v", e, err)
		}
	}
	if got := ifname("tap0"); len(got) != 16 || string(got[:5]) != "tap0\x00" {
		t.Errorf("ifname = %q", got)
	}
}
