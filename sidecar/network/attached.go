package network

import (
	"fmt"
	"slices"
)

// AttachedStatus is what an unprivileged sidecar (network-setup mode "node")
// can tell from links alone: whether the node agent has attached LinkName,
// holding Address and up, to in's bridge with its peer. It returns a
// *WaitError until then. Its Ingress is empty: in this mode the agent's guard
// admits only the guest's interfaces, and the listener attaches no filter (an
// unprivileged process may not attach one on every kernel).
func AttachedStatus(links []Link, in Inputs) Status {
	obs := Observed{Links: links}
	bridge := obs.Link(in.Bridge)
	if bridge == nil || bridge.Kind != "bridge" {
		return Status{Err: &WaitError{Reason: fmt.Sprintf("bridge %s does not exist yet", in.Bridge)}}
	}
	guest, err := findGuestPort(obs, bridge, in.GuestPort)
	if err != nil {
		return Status{Err: err}
	}
	veth, peer := obs.Link(LinkName), obs.Link(PeerName)
	switch {
	case veth == nil || peer == nil:
		return Status{Err: &WaitError{Reason: fmt.Sprintf("the node agent has not created %s yet", LinkName)}}
	case peer.MasterIndex != bridge.Index:
		return Status{Err: &WaitError{Reason: fmt.Sprintf("%s is not a port of %s yet", PeerName, bridge.Name)}}
	case !veth.Up || !peer.Up:
		return Status{Err: &WaitError{Reason: fmt.Sprintf("%s is not up yet", LinkName)}}
	case !slices.Contains(veth.Addrs, Address):
		return Status{Err: &WaitError{Reason: fmt.Sprintf("%s does not hold %s yet", LinkName, Address)}}
	}
	p := Plan{Bridge: bridge.Name, GuestPort: guest.Name, MAC: slices.Clone(veth.MAC)}
	return Status{Plan: p, LinkIndex: veth.Index, GuestPortIndex: guest.Index, BridgeIndex: bridge.Index}
}
