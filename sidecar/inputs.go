package sidecar

import (
	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// inputsFor chooses the bridge and the MAC seed: the --bridge flag, else the
// payload's Serve.Bridge, else the bridge of the payload's primary interface,
// else KubeVirt's primary bridge. The seed is the VMI's UID, which stays the
// same on a live-migration target, so the guest's neighbour entry does too.
func inputsFor(o Options, doc *payload.Document) network.Inputs {
	// The guest connects to the port the sidecar listens on: in mode
	// "sidecar" nothing redirects. (Mode "node" has the agent's inputs.)
	in := network.Inputs{Bridge: o.Bridge, GuestPort: o.GuestPort, MACSeed: o.MACSeed, ServicePort: o.ListenPort, ListenPort: o.ListenPort}
	if doc == nil {
		if in.Bridge == "" {
			in.Bridge = network.PrimaryBridge
		}
		return in
	}
	if in.MACSeed == "" {
		in.MACSeed = doc.Instance.UID
	}
	if in.MACSeed == "" {
		in.MACSeed = doc.Instance.ID
	}
	if in.Bridge == "" {
		in.Bridge = doc.Serve.Bridge
	}
	if in.Bridge == "" && doc.Network != nil {
		for _, i := range doc.Network.Interfaces {
			if i.Primary && i.Bridge != "" {
				in.Bridge = i.Bridge
				break
			}
		}
	}
	if in.Bridge == "" {
		in.Bridge = network.PrimaryBridge
	}
	return in
}
