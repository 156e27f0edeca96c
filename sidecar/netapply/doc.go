// Package netapply carries a network.Plan out in the calling goroutine's
// network namespace: links, addresses, rules and routes over netlink, and
// the guard and redirect tables over nftables (Kernel), idempotently
// (Apply), and keeps it applied as the namespace changes (Reconciler). What
// the plan builds, and why, is sidecar/network's documentation.
//
// It needs CAP_NET_ADMIN: the node agent and the netadmin sidecar binary
// link it; the per-VM sidecar of mode "node" does not.
package netapply
