package network

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

const (
	// LinkName is the Pod-side link that holds the metadata address.
	LinkName = "veth-imds"
	// PeerName is LinkName's veth peer, a port of the served bridge.
	PeerName = "veth-imds-br"
	// RouteTable holds the default route out of LinkName for replies (169<<8|254).
	RouteTable = 43518
	// RulePriorityMain is the priority of the rule that lets replies use the
	// Pod's connected routes; RulePriorityTable, the next one, sends the rest
	// to RouteTable. Both precede the main table's rule (32766).
	RulePriorityMain  = 1690
	RulePriorityTable = 1691
	// mainTable is the kernel's main routing table.
	mainTable = 254

	// ARPIgnoreNone (8) makes the kernel answer no ARP request on a device.
	ARPIgnoreNone = 8
	// ARPIgnoreOwn (1) makes the kernel answer only for addresses configured
	// on the device that received the request.
	ARPIgnoreOwn = 1

	// BridgePrefix starts every bridge KubeVirt builds inside the Pod.
	BridgePrefix = "k6t-"
	// PrimaryBridge is the primary interface's bridge.
	PrimaryBridge = "k6t-eth0"

	// RedirectTable is the nftables table (family bridge) holding the
	// redirect of the guest's packets for Address; it holds nothing else, so
	// it is replaced and removed as a whole.
	RedirectTable = "kubevirt-imds"
	// GuardTable is the nftables table (family ip) holding the guard of
	// Address; it holds nothing else, so it is replaced as a whole.
	GuardTable = "kubevirt-imds-guard"

	// DefaultServicePort is the TCP port guests connect to on Address.
	DefaultServicePort = 80
)

// Address is the metadata service's address.
var Address = netip.MustParsePrefix("169.254.169.254/32")

// Link is one observed network interface.
type Link struct {
	Name  string
	Index int
	// Kind is the link type as netlink reports it: bridge, veth, tuntap, device…
	Kind string
	// MasterIndex is the ifindex of the bridge the link is a port of; 0 if none.
	MasterIndex int
	// PeerIndex is a veth's peer ifindex (IFLA_LINK); 0 if unknown.
	PeerIndex int
	MAC       net.HardwareAddr
	MTU       int
	Up        bool
	// Isolated is the bridge port flag; meaningful for ports only.
	Isolated bool
	// ARPIgnore is the device's arp_ignore; -1 when not observed.
	ARPIgnore int
	// Addrs are the IPv4 addresses, observed for LinkName only.
	Addrs []netip.Prefix
}

// Rule is an IPv4 policy routing rule matching a source prefix.
type Rule struct {
	Priority int
	Src      netip.Prefix
	Table    int
	// SuppressPrefixLen is suppress_prefixlength; -1 for none.
	SuppressPrefixLen int
}

func (r Rule) String() string {
	s := fmt.Sprintf("%d: from %s lookup %d", r.Priority, r.Src, r.Table)
	if r.SuppressPrefixLen >= 0 {
		s += fmt.Sprintf(" suppress_prefixlength %d", r.SuppressPrefixLen)
	}
	return s
}

// Route is an IPv4 route through a device.
type Route struct {
	Table int
	Dst   netip.Prefix
	Dev   string
}

// FDBEntry is a bridge forwarding entry on a port.
type FDBEntry struct {
	Dev string
	MAC net.HardwareAddr
	// Static is a forwarding (not local, not learned) entry: NUD_NOARP with
	// the master flag, what `bridge fdb add … master static` creates.
	Static bool
}

// Redirect steers what the guest sends to Address into LinkName, whatever
// the frame's destination MAC, and keeps it off every other port. It is the
// table RedirectTable, two base chains of the bridge family with one rule
// each:
//
//	prerouting (priority -300): iifname Port ether type ip ip daddr 169.254.169.254 ether daddr set MAC
//	forward    (priority -200): iifname Port ether type ip ip daddr 169.254.169.254 oifname != veth-imds-br drop
//
// Why: in bridge binding the guest holds the Pod's IP and routes
// 169.254.169.254 through its real gateway, on the node behind eth0-nic, so
// its frames carry the gateway's MAC and the bridge would forward them out
// of the uplink — away from the sidecar, and to whatever metadata service
// the node itself answers for. Rewriting the destination MAC before the
// bridge looks it up makes the bridge deliver the frame to veth-imds-br
// (LinkName's MAC has a static FDB entry there), and veth-imds receives it
// as its own; the guest's other traffic does not match. The forward rule
// makes that fail closed: while veth-imds-br is missing (being repaired) a
// rewritten frame would be flooded, and it must not reach the uplink either.
//
// Why nftables and not tc on the tap's ingress: the frame's destination MAC
// must change (or its packet type be forced to host), which takes act_pedit
// or act_skbedit — optional parts of a kernel, and kernels built without
// them (and without cls_flower) run Pods — while act_mirred alone redirects
// a frame the receiving stack then drops as addressed to another host; and a
// BPF classifier that rewrites needs CAP_BPF or CAP_SYS_ADMIN, which the
// sidecar does not have. nf_tables' bridge family is part of nf_tables
// itself in current kernels and KubeVirt's own masquerade binding already
// relies on nf_tables in the Pod; CAP_NET_ADMIN in the Pod's namespace is all
// it takes. The rule names the port rather than an ifindex, so it keeps
// matching a tap that is recreated under the same name.
type Redirect struct {
	// Port is the bridge port whose frames are matched: the guest's.
	Port string
	// MAC is the destination written into matched frames: LinkName's.
	MAC net.HardwareAddr
}

// Equal reports whether r and o are the same redirect.
func (r Redirect) Equal(o Redirect) bool {
	return r.Port == o.Port && bytes.Equal(r.MAC, o.MAC)
}

func (r Redirect) String() string {
	return fmt.Sprintf("iifname %s ip daddr %s ether daddr set %s", r.Port, Address.Addr(), r.MAC)
}

// Guard keeps everything but the metadata service out of the guest's reach
// through Address. Address is local on LinkName, so without it any IPv4
// packet the guest sends there — to another port, ICMP, UDP — would reach
// the Pod's own sockets: a masquerade guest's packets are routed locally,
// and a bridge-binding guest's are delivered to LinkName by Redirect. It is
// the table GuardTable, family ip. Without a port redirect it has one base
// chain:
//
//	input (filter, priority 0):
//	  iifname INGRESS ip daddr 169.254.169.254 tcp dport ServicePort accept   (one rule per name in Ingress)
//	  iifname != "lo" ip daddr 169.254.169.254 drop
//
// With one (ListenPort differs from ServicePort: an unprivileged server that
// cannot bind ServicePort), three:
//
//	raw (filter, prerouting, priority -300):
//	  iifname != "veth-imds" ip daddr 169.254.169.254 ether daddr MAC notrack
//	  ip saddr 169.254.169.254 ether saddr MAC notrack
//	prerouting (nat, priority -100):
//	  iifname != "lo" ip daddr 169.254.169.254 tcp dport ServicePort dnat ip to 169.254.169.254:ListenPort
//	input (filter, priority 0):
//	  iifname INGRESS ip daddr 169.254.169.254 tcp dport ListenPort ct status dnat accept   (one rule per name in Ingress)
//	  iifname != "lo" ip daddr 169.254.169.254 drop
//
// Why the input hook: it sees only what is delivered to local sockets, after
// reassembly, so the guest's traffic through the Pod to anywhere else is
// untouched, and ARP, which is not IPv4, is never matched. Loopback is left
// alone: Pod-local clients are not the guest. The accepted interfaces are
// the listener's (Plan.Ingress), so the guard alone keeps the node and a
// foreign host on the Pod's L2 away too, also where the listener carries no
// socket filter of its own.
//
// Why "ct status dnat" rather than the original port: only a connection our
// DNAT rewrote carries that status, so a guest connecting straight to
// ListenPort is dropped like any other port (nftables' ct original
// proto-dst would say the same, but the library cannot read its direction
// back from the kernel, so Observe could not recognise the table).
//
// Why the raw chain: where bridge netfilter is on (br_netfilter, on by
// default in every namespace once loaded, as on Kubernetes nodes), the
// bridge runs IPv4 prerouting for the frames it forwards. A frame to
// veth-imds's MAC would be tracked and translated there, then tracked again
// when veth-imds receives it — the veth drops its conntrack entry — as a
// new connection to ListenPort whose reply tuple clashes with the first:
// dropped. Frames the bridge carries to or from veth-imds are therefore not
// tracked; veth-imds tracks and translates them once. A masquerade guest's
// frames, addressed to the bridge itself, are tracked and translated where
// the bridge hands them to its own stack, as before.
type Guard struct {
	// ServicePort is the TCP port the guest connects to.
	ServicePort int
	// ListenPort is where the metadata server listens; equal to
	// ServicePort for no redirect.
	ListenPort int
	// MAC is LinkName's address, which tells the bridge's pass of a frame
	// to or from veth-imds; set with a redirect only.
	MAC net.HardwareAddr
	// Ingress are the interfaces the guest's connections may arrive on
	// (Plan.Ingress).
	Ingress []string
}

// Redirects reports whether the guard translates ServicePort to ListenPort.
func (g Guard) Redirects() bool { return g.ListenPort != g.ServicePort }

// Equal reports whether g and o are the same guard.
func (g Guard) Equal(o Guard) bool {
	return g.ServicePort == o.ServicePort && g.ListenPort == o.ListenPort && bytes.Equal(g.MAC, o.MAC) &&
		slices.Equal(g.Ingress, o.Ingress)
}

func (g Guard) String() string {
	from := strings.Join(g.Ingress, ",")
	if g.Redirects() {
		return fmt.Sprintf("ip daddr %s: tcp dport %d dnat to %d (frames of %s untracked on the bridge), accept only that from %s", Address.Addr(), g.ServicePort, g.ListenPort, g.MAC, from)
	}
	return fmt.Sprintf("ip daddr %s: accept only tcp dport %d from %s", Address.Addr(), g.ServicePort, from)
}

// Observed is the part of the Pod's network namespace the plan depends on.
type Observed struct {
	Links []Link
	// Rules are the IPv4 rules at our priorities or into RouteTable.
	Rules []Rule
	// Routes are the routes in RouteTable.
	Routes []Route
	// FDB are the entries on PeerName.
	FDB []FDBEntry
	// Redirect is what RedirectTable holds: nil when the table does not
	// exist, the zero Redirect when it exists but is not exactly what
	// ReplaceRedirect builds (so it gets replaced).
	Redirect *Redirect
	// Guard is what GuardTable holds: nil when the table does not exist,
	// the zero Guard when it is not exactly what ReplaceGuard builds.
	Guard *Guard
}

// Link returns the observed link called name, or nil.
func (o *Observed) Link(name string) *Link {
	for i := range o.Links {
		if o.Links[i].Name == name {
			return &o.Links[i]
		}
	}
	return nil
}

// Ports returns the links enslaved to the bridge with index, sorted by name.
func (o *Observed) Ports(bridge int) []Link {
	var ports []Link
	for _, l := range o.Links {
		if l.MasterIndex == bridge && bridge != 0 {
			ports = append(ports, l)
		}
	}
	slices.SortFunc(ports, func(a, b Link) int { return strings.Compare(a.Name, b.Name) })
	return ports
}

// Inputs are the choices that do not come from the namespace.
type Inputs struct {
	// Bridge is the bridge to serve on, such as k6t-eth0.
	Bridge string
	// GuestPort overrides the name of the VM's port on Bridge; empty derives
	// it from Bridge (GuestPortName).
	GuestPort string
	// MACSeed identifies the instance; a new LinkName gets DeriveMAC(MACSeed,
	// Bridge).
	MACSeed string
	// ServicePort is the TCP port the guest connects to on Address; 0 means
	// DefaultServicePort. The guard drops every other packet for Address.
	ServicePort int
	// ListenPort is the port the metadata server listens on; 0 means
	// ServicePort. When it differs, the guard translates the guest's
	// connections to ServicePort onto it and refuses direct ones.
	ListenPort int
}

// ports returns ServicePort and ListenPort with their defaults applied.
func (in Inputs) ports() (service, listen int, err error) {
	service, listen = in.ServicePort, in.ListenPort
	if service == 0 {
		service = DefaultServicePort
	}
	if listen == 0 {
		listen = service
	}
	for _, p := range []int{service, listen} {
		if p < 1 || p > 65535 {
			return 0, 0, fmt.Errorf("port %d out of range", p)
		}
	}
	return service, listen, nil
}

// WaitError says what the namespace still lacks before a plan can be made;
// the caller waits for the next link event rather than failing.
type WaitError struct {
	Reason string
}

func (e *WaitError) Error() string { return e.Reason }

// Plan is the outcome of Compute: what the namespace should look like and the
// ordered actions that get it there. An empty Actions means nothing to do.
type Plan struct {
	Bridge    string
	GuestPort string
	// MAC is LinkName's address: adopted if the link exists, derived if not.
	MAC net.HardwareAddr
	// BridgeIngress is true when the bridge holds no port but the guest's
	// and ours, so traffic routed in through the bridge can only come from
	// the guest (masquerade) and may reach the listener.
	BridgeIngress bool
	// Redirect is the redirect the namespace should have; nil when the
	// bridge has no port but the guest's and ours (masquerade), where the
	// guest's gateway is the bridge itself and its packets for Address are
	// routed locally without help.
	Redirect *Redirect
	// Guard is the guard the namespace should have; always wanted.
	Guard   Guard
	Actions []Action
}

// Ingress names the interfaces the listener may accept connections from.
func (p *Plan) Ingress() []string {
	if p.BridgeIngress {
		return []string{LinkName, p.Bridge}
	}
	return []string{LinkName}
}

// GuestPortName is the VM's tap on a KubeVirt bridge: k6t-eth0 carries tap0,
// k6t-net1 tap1 (ordinal secondary names), and a Multus secondary's hashed
// bridge k6t-<hash> carries tap<hash>.
func GuestPortName(bridge string) string {
	suffix := strings.TrimPrefix(bridge, BridgePrefix)
	for _, ordinal := range []string{"eth", "net"} {
		if rest, ok := strings.CutPrefix(suffix, ordinal); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			return "tap" + rest
		}
	}
	return "tap" + suffix
}

// DeriveMAC returns a locally administered unicast MAC address determined by
// seed and bridge alone, so a restarted sidecar — or one on a live-migration
// target, where the instance is the same — recreates the same address.
func DeriveMAC(seed, bridge string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("kubevirt-imds/" + seed + "/" + bridge))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}

// PeerMAC is the address of veth-imds-br, the port on KubeVirt's bridge:
// fe:ff followed by the rest of veth-imds's. A bridge whose address was not
// set explicitly takes the lowest of its ports' addresses, so a port with a
// random MAC could change the bridge's — the masquerade guest's gateway —
// under a running guest. fe:ff sorts above every unicast address but those
// starting fe:ff, as libvirt's fe:… taps do for the same reason.
func PeerMAC(mac net.HardwareAddr) net.HardwareAddr {
	peer := slices.Clone(mac)
	peer[0], peer[1] = 0xfe, 0xff
	return peer
}

// desiredRules are the two reply-routing rules.
func desiredRules() []Rule {
	return []Rule{
		{Priority: RulePriorityMain, Src: Address, Table: mainTable, SuppressPrefixLen: 0},
		{Priority: RulePriorityTable, Src: Address, Table: RouteTable, SuppressPrefixLen: -1},
	}
}

// Compute plans the namespace for in. It returns a *WaitError while the
// bridge or the guest's port does not exist yet.
func Compute(obs Observed, in Inputs) (Plan, error) {
	if in.Bridge == "" {
		return Plan{}, fmt.Errorf("no bridge to serve on")
	}
	service, listen, err := in.ports()
	if err != nil {
		return Plan{}, err
	}
	bridge := obs.Link(in.Bridge)
	if bridge == nil {
		return Plan{}, &WaitError{Reason: fmt.Sprintf("bridge %s does not exist yet", in.Bridge)}
	}
	if bridge.Kind != "bridge" {
		return Plan{}, &WaitError{Reason: fmt.Sprintf("%s is a %s link, not a bridge", in.Bridge, bridge.Kind)}
	}
	guest, err := findGuestPort(obs, bridge, in.GuestPort)
	if err != nil {
		return Plan{}, err
	}

	p := Plan{Bridge: bridge.Name, GuestPort: guest.Name}
	veth, peer := obs.Link(LinkName), obs.Link(PeerName)
	adopt := veth != nil && peer != nil && veth.Kind == "veth" && peer.Kind == "veth" &&
		(veth.PeerIndex == 0 || veth.PeerIndex == peer.Index)
	if !adopt {
		// A half-built or foreign pair cannot be repaired in place; deleting
		// one end of a veth removes both.
		if veth != nil {
			p.Actions = append(p.Actions, DeleteLink{Name: LinkName})
		}
		if peer != nil && (veth == nil || veth.PeerIndex != peer.Index) {
			p.Actions = append(p.Actions, DeleteLink{Name: PeerName})
		}
		p.MAC = DeriveMAC(in.MACSeed, bridge.Name)
		p.Actions = append(p.Actions, CreateVeth{Name: LinkName, Peer: PeerName, MAC: p.MAC, PeerMAC: PeerMAC(p.MAC), MTU: bridge.MTU})
		veth = &Link{Name: LinkName, Kind: "veth", MAC: p.MAC, MTU: bridge.MTU, ARPIgnore: -1}
		peer = &Link{Name: PeerName, Kind: "veth", MTU: bridge.MTU, ARPIgnore: -1}
	} else {
		p.MAC = slices.Clone(veth.MAC)
	}

	// Settle the kernel's ARP behaviour before the link is up, so it never
	// answers in between.
	if veth.ARPIgnore != ARPIgnoreNone {
		p.Actions = append(p.Actions, SetARPIgnore{Link: LinkName, Value: ARPIgnoreNone})
	}
	if bridge.ARPIgnore < ARPIgnoreOwn {
		p.Actions = append(p.Actions, SetARPIgnore{Link: bridge.Name, Value: ARPIgnoreOwn})
	}
	for _, l := range []*Link{veth, peer} {
		if l.MTU != bridge.MTU {
			// A smaller port would lower the bridge's MTU for the VM too.
			p.Actions = append(p.Actions, SetMTU{Link: l.Name, MTU: bridge.MTU})
		}
	}
	// Port flags exist only once enslaved; the port is still down (a new veth
	// is created down, SetUp comes last), so nothing is forwarded before it
	// is isolated.
	if peer.MasterIndex != bridge.Index || bridge.Index == 0 {
		p.Actions = append(p.Actions, SetMaster{Link: PeerName, Master: bridge.Name})
	}
	if !peer.Isolated {
		p.Actions = append(p.Actions, SetIsolated{Link: PeerName})
	}
	p.BridgeIngress = true
	for _, port := range obs.Ports(bridge.Index) {
		if port.Name == guest.Name || port.Name == PeerName {
			continue
		}
		p.BridgeIngress = false
		if !port.Isolated {
			p.Actions = append(p.Actions, SetIsolated{Link: port.Name})
		}
	}
	// The guard comes first, before Address is local anywhere: no moment
	// exists in which the guest reaches the Pod's other sockets through it.
	// It matches names, not ifindexes, so the links need not exist yet.
	p.Guard = Guard{ServicePort: service, ListenPort: listen, Ingress: p.Ingress()}
	if p.Guard.Redirects() {
		p.Guard.MAC = slices.Clone(p.MAC)
	}
	if obs.Guard == nil || !obs.Guard.Equal(p.Guard) {
		p.Actions = append([]Action{ReplaceGuard{Guard: p.Guard}}, p.Actions...)
	}
	if !slices.Contains(veth.Addrs, Address) {
		p.Actions = append(p.Actions, AddAddress{Link: LinkName, Prefix: Address})
	}
	for _, l := range []*Link{peer, veth} {
		if !l.Up {
			p.Actions = append(p.Actions, SetUp{Link: l.Name})
		}
	}
	if !slices.ContainsFunc(obs.FDB, func(e FDBEntry) bool {
		return e.Dev == PeerName && e.Static && bytes.Equal(e.MAC, p.MAC)
	}) || !adopt {
		p.Actions = append(p.Actions, SetFDB{Link: PeerName, MAC: p.MAC})
	}
	// The redirect comes after the FDB entry: a frame rewritten to LinkName's
	// MAC before the bridge knows where it lives would be flooded. A foreign
	// port means the guest's gateway may lie beyond it (bridge binding).
	if !p.BridgeIngress {
		p.Redirect = &Redirect{Port: guest.Name, MAC: slices.Clone(p.MAC)}
		if obs.Redirect == nil || !obs.Redirect.Equal(*p.Redirect) {
			p.Actions = append(p.Actions, ReplaceRedirect{Redirect: *p.Redirect})
		}
	} else if obs.Redirect != nil {
		p.Actions = append(p.Actions, DeleteRedirect{})
	}

	want := desiredRules()
	for _, r := range obs.Rules {
		if !slices.Contains(want, r) && (r.Priority == RulePriorityMain || r.Priority == RulePriorityTable || r.Table == RouteTable) {
			p.Actions = append(p.Actions, DeleteRule{Rule: r})
		}
	}
	for _, r := range want {
		if !slices.Contains(obs.Rules, r) {
			p.Actions = append(p.Actions, AddRule{Rule: r})
		}
	}
	route := Route{Table: RouteTable, Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: LinkName}
	if !adopt || !slices.Contains(obs.Routes, route) {
		p.Actions = append(p.Actions, ReplaceRoute{Route: route})
	}
	return p, nil
}

func findGuestPort(obs Observed, bridge *Link, override string) (*Link, error) {
	name := override
	if name == "" {
		name = GuestPortName(bridge.Name)
	}
	if l := obs.Link(name); l != nil {
		if l.MasterIndex != bridge.Index {
			return nil, &WaitError{Reason: fmt.Sprintf("guest port %s is not a port of %s yet", name, bridge.Name)}
		}
		return l, nil
	}
	if override == "" {
		// A tap we cannot name (a binding with its own naming): the bridge's
		// only tap device is the VM's.
		var taps []Link
		for _, port := range obs.Ports(bridge.Index) {
			if port.Kind == "tuntap" {
				taps = append(taps, port)
			}
		}
		if len(taps) == 1 {
			return obs.Link(taps[0].Name), nil
		}
	}
	return nil, &WaitError{Reason: fmt.Sprintf("guest port %s does not exist yet on %s", name, bridge.Name)}
}

// Action is one step of a Plan. The concrete types below are the only ones.
type Action interface {
	fmt.Stringer
	isAction()
}

// CreateVeth creates the veth pair Name–Peer with their MACs and MTU.
type CreateVeth struct {
	Name, Peer   string
	MAC, PeerMAC net.HardwareAddr
	MTU          int
}

// DeleteLink removes a link (with a veth, its peer too).
type DeleteLink struct{ Name string }

// SetMaster makes Link a port of the bridge Master.
type SetMaster struct{ Link, Master string }

// SetMTU sets Link's MTU.
type SetMTU struct {
	Link string
	MTU  int
}

// SetUp brings Link up.
type SetUp struct{ Link string }

// SetIsolated sets the isolated flag on the bridge port Link.
type SetIsolated struct{ Link string }

// SetARPIgnore sets Link's arp_ignore over netlink.
type SetARPIgnore struct {
	Link  string
	Value int
}

// AddAddress adds Prefix to Link.
type AddAddress struct {
	Link   string
	Prefix netip.Prefix
}

// AddRule adds a policy routing rule.
type AddRule struct{ Rule Rule }

// DeleteRule removes a stale rule of ours.
type DeleteRule struct{ Rule Rule }

// ReplaceRoute adds or replaces a route.
type ReplaceRoute struct{ Route Route }

// SetFDB adds or replaces a static FDB entry for MAC on the port Link.
type SetFDB struct {
	Link string
	MAC  net.HardwareAddr
}

// ReplaceRedirect replaces RedirectTable, atomically, with one holding
// Redirect.
type ReplaceRedirect struct{ Redirect Redirect }

// DeleteRedirect removes RedirectTable.
type DeleteRedirect struct{}

// ReplaceGuard replaces GuardTable, atomically, with one holding Guard.
type ReplaceGuard struct{ Guard Guard }

func (CreateVeth) isAction()      {}
func (DeleteLink) isAction()      {}
func (SetMaster) isAction()       {}
func (SetMTU) isAction()          {}
func (SetUp) isAction()           {}
func (SetIsolated) isAction()     {}
func (SetARPIgnore) isAction()    {}
func (AddAddress) isAction()      {}
func (AddRule) isAction()         {}
func (DeleteRule) isAction()      {}
func (ReplaceRoute) isAction()    {}
func (SetFDB) isAction()          {}
func (ReplaceRedirect) isAction() {}
func (DeleteRedirect) isAction()  {}
func (ReplaceGuard) isAction()    {}

func (a CreateVeth) String() string {
	return fmt.Sprintf("create veth %s (%s) peer %s (%s) mtu %d", a.Name, a.MAC, a.Peer, a.PeerMAC, a.MTU)
}
func (a DeleteLink) String() string  { return "delete link " + a.Name }
func (a SetMaster) String() string   { return fmt.Sprintf("set %s master %s", a.Link, a.Master) }
func (a SetMTU) String() string      { return fmt.Sprintf("set %s mtu %d", a.Link, a.MTU) }
func (a SetUp) String() string       { return fmt.Sprintf("set %s up", a.Link) }
func (a SetIsolated) String() string { return fmt.Sprintf("set %s isolated", a.Link) }
func (a SetARPIgnore) String() string {
	return fmt.Sprintf("set %s arp_ignore %d", a.Link, a.Value)
}
func (a AddAddress) String() string { return fmt.Sprintf("add address %s to %s", a.Prefix, a.Link) }
func (a AddRule) String() string    { return "add rule " + a.Rule.String() }
func (a DeleteRule) String() string { return "delete rule " + a.Rule.String() }
func (a ReplaceRoute) String() string {
	return fmt.Sprintf("replace route %s dev %s table %d", a.Route.Dst, a.Route.Dev, a.Route.Table)
}
func (a SetFDB) String() string          { return fmt.Sprintf("set fdb %s dev %s master static", a.MAC, a.Link) }
func (a ReplaceRedirect) String() string { return "replace redirect " + a.Redirect.String() }
func (DeleteRedirect) String() string    { return "delete redirect table " + RedirectTable }
func (a ReplaceGuard) String() string    { return "replace guard " + a.Guard.String() }
