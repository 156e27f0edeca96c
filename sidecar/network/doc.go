// Package network plans how 169.254.169.254 is plumbed into a virt-launcher
// Pod's network namespace, next to the bridge KubeVirt builds for the VM's
// interface, and listens there for the guest.
//
// It follows the shape of KubeVirt's pkg/network and the CNI plugins: what
// the namespace holds is Observed, Compute turns it into a Plan (pure, so
// every decision is unit-tested without root), and sidecar/netapply carries
// the plan out through a small Netlink interface, idempotently, so a
// restarted sidecar adopts what an earlier one left behind instead of
// disturbing the guest. This package links no code that changes a
// namespace: the per-VM sidecar of mode "node", which only watches and
// listens, imports it alone.
//
// What the plan builds, and why:
//
//   - veth-imds holds 169.254.169.254/32; its peer veth-imds-br is a port of the
//     served bridge (k6t-eth0 for the primary interface). A link-local-only
//     guest ARPs for the address and talks to veth-imds directly over the
//     bridge; a masquerade guest routes to its gateway, the bridge's 10.0.2.1,
//     and the Pod delivers locally. The pair is never removed: a restart adopts
//     it and keeps its MAC, so the guest's neighbour entry stays valid.
//   - The MAC of a new veth-imds is derived from the instance's identity and
//     the bridge (DeriveMAC): locally administered and unicast, the same after
//     a restart and on a live-migration target, different per VM.
//   - The kernel never answers ARP on veth-imds (arp_ignore 8: measured, the
//     kernel otherwise answers for every local address there, the gateway
//     included — ARP flux), and the bridge answers only for its own addresses
//     (arp_ignore 1: 10.0.2.1, or bridge binding's 169.254.75.10 — all the
//     guest needs from it; a value already stricter is kept), so it cannot
//     hand out its own MAC for 169.254.169.254. The sidecar's ARP responder,
//     listening on the guest's port only, is then the single source of
//     answers. Both are per-device IPv4 settings written over netlink
//     (IFLA_INET_CONF): the sidecar never writes under /proc/sys.
//   - Foreign ports are isolated with the bridge's own port flag (isolated on
//     veth-imds-br and on every port that is neither the guest's nor ours, such
//     as bridge binding's eth0-nic). Isolated ports never exchange frames, so
//     nothing on the Pod's uplink reaches veth-imds — no flooded ARP request, no
//     unicast, and our gratuitous announcements reach the guest only. It is a
//     kernel bridge feature (4.18+) needing no netfilter on the node, and it
//     leaves the guest's own path
//     through eth0-nic untouched (the guest's port stays non-isolated). A
//     static FDB entry for veth-imds's MAC keeps the guest's unicast to it from
//     ever being flooded out of the uplink.
//   - A guest that routes 169.254.169.254 through its gateway — every stock
//     guest in bridge binding, where the gateway is the node's, behind
//     eth0-nic — addresses its frames to the gateway's MAC; the bridge would
//     carry them out of the uplink, to the node and whatever metadata service
//     it answers for. When the bridge has a port other than the guest's and
//     ours, a bridge-family nftables table (Redirect) rewrites the destination
//     MAC of what enters from the guest's port for 169.254.169.254 to
//     veth-imds's, before the bridge looks it up, and drops such a frame at
//     any other egress port, so it fails closed. Nothing else the guest sends
//     matches, nor anything entering by another port. In masquerade the
//     gateway is the bridge itself and the Pod routes the packet locally: no
//     table is made, and one left over is removed. Isolation itself stays a
//     bridge port flag; nftables is needed only where the guest's gateway
//     lies beyond the Pod.
//   - Address being local, every IPv4 packet the guest sends to it would
//     reach the Pod's own sockets — any listener on 0.0.0.0, UDP services,
//     ICMP echo. An ip-family nftables table (Guard) drops, at the input
//     hook, every packet for Address that arrived on an interface other
//     than lo and is not TCP to the service port arriving where the
//     listener may accept it (Plan.Ingress); it is applied before
//     anything else, so Address is never local unguarded. When the server
//     cannot bind the service port (network-setup mode "node", unprivileged),
//     the same table translates the guest's service port to the listen port
//     and accepts only connections so translated.
//   - TCP is filtered by ingress interface with a socket filter on the
//     listener (Listen): only veth-imds, and the bridge itself when no port but
//     the guest's and ours sits on it (masquerade), may reach the port. A SYN
//     arriving another way — the Pod's eth0 in masquerade mode, or a foreign
//     host addressing the bridge's MAC in bridge binding — is dropped before
//     TCP sees it, so it gets no answer at all, not even a reset.
//   - Replies find their way back whatever rp_filter is (0, 1 or 2) through
//     policy routing on the source address only: "from 169.254.169.254 lookup
//     main suppress_prefixlength 0" keeps the Pod's connected routes (the
//     masquerade guest's 10.0.2.0/24 on the bridge, so the reverse-path check
//     of its SYN matches its ingress), then "from 169.254.169.254 lookup
//     43518" sends everything else — link-local guests, bridge-binding guests
//     with a Pod IP — out of veth-imds, where the kernel resolves the guest's
//     MAC by ARP across the bridge (veth-imds-br is isolated and the guest's
//     port is not, so the request reaches the guest and never the uplink; a
//     routed bridge-binding guest answers though the sender, 169.254.169.254,
//     is off its subnet, as Linux does). No route in the main table changes:
//     the Pod's other link-local traffic (NodeLocal DNSCache's 169.254.20.10)
//     is left alone.
package network
