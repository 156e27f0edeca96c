package netapply

import (
	"net"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// mac is a locally administered unicast address ending in b.
func mac(b byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, b} }

// podLinks is a virt-launcher Pod as KubeVirt leaves it for masquerade,
// followed by extra.
func podLinks(extra ...network.Link) []network.Link {
	links := []network.Link{
		{Name: "lo", Index: 1, Kind: "device", Up: true, ARPIgnore: -1},
		{Name: "eth0", Index: 2, Kind: "veth", MTU: 1450, Up: true, ARPIgnore: -1},
		{Name: "k6t-eth0", Index: 3, Kind: "bridge", MAC: mac(3), MTU: 1450, Up: true},
		{Name: "tap0", Index: 4, Kind: "tuntap", MasterIndex: 3, MAC: mac(4), MTU: 1450, Up: true, ARPIgnore: -1},
	}
	return append(links, extra...)
}

// bridgeBindingLinks is a virt-launcher Pod as KubeVirt leaves it for
// bridge binding: the Pod's eth0 renamed eth0-nic and enslaved.
func bridgeBindingLinks(extra ...network.Link) []network.Link {
	links := podLinks(extra...)
	links[1] = network.Link{Name: "eth0-nic", Index: 2, Kind: "veth", MasterIndex: 3, MTU: 1450, Up: true, ARPIgnore: -1}
	return links
}

// actionStrings is as, one string per action.
func actionStrings(as []network.Action) []string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return s
}
