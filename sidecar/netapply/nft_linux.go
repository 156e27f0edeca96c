package netapply

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// readTable reads t's chains and the rules of each, keyed by chain name;
// found is false when the table does not exist, or nf_tables itself does
// not (a kernel built without it). Each call dials its own netlink socket
// from the calling thread, so it reads the namespace that thread is in.
func readTable(t *nftables.Table) (chains []*nftables.Chain, rules map[string][]*nftables.Rule, found bool, err error) {
	c, err := nftables.New()
	if err != nil {
		return nil, nil, false, err
	}
	tables, err := c.ListTablesOfFamily(t.Family)
	if err != nil {
		if errors.Is(err, syscall.EPROTONOSUPPORT) {
			return nil, nil, false, nil
		}
		return nil, nil, false, fmt.Errorf("listing nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name }) {
		return nil, nil, false, nil
	}
	all, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, nil, false, fmt.Errorf("listing nftables chains: %w", err)
	}
	rules = map[string][]*nftables.Rule{}
	for _, ch := range all {
		if ch.Table == nil || ch.Table.Name != t.Name {
			continue
		}
		chains = append(chains, ch)
		if rules[ch.Name], err = c.GetRules(t, ch); err != nil {
			return nil, nil, false, fmt.Errorf("listing rules of %s %s: %w", t.Name, ch.Name, err)
		}
	}
	return chains, rules, true, nil
}

// isTable reports whether chains and rules, as read back from the kernel,
// are exactly spec: the same base chains (hook, priority, type, policy) and
// in each the same rules in the same order. A chain or rule added by hand
// makes it false.
func isTable(spec []nftChain, chains []*nftables.Chain, rules map[string][]*nftables.Rule) bool {
	if len(chains) != len(spec) {
		return false
	}
	for _, ch := range chains {
		i := slices.IndexFunc(spec, func(s nftChain) bool { return s.chain.Name == ch.Name })
		if i < 0 {
			return false
		}
		want := spec[i]
		if ch.Hooknum == nil || *ch.Hooknum != *want.chain.Hooknum || ch.Priority == nil || *ch.Priority != *want.chain.Priority ||
			ch.Type != want.chain.Type || ch.Policy == nil || *ch.Policy != *want.chain.Policy || len(rules[ch.Name]) != len(want.rules) {
			return false
		}
		for j, r := range rules[ch.Name] {
			if !sameExprs(byte(want.chain.Table.Family), r.Exprs, want.rules[j]) {
				return false
			}
		}
	}
	return true
}

// sameExprs compares expressions by their netlink encoding, which is what
// the kernel holds; decoded structs may differ in nil against empty.
func sameExprs(family byte, a, b []expr.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, err1 := expr.Marshal(family, a[i])
		y, err2 := expr.Marshal(family, b[i])
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}
