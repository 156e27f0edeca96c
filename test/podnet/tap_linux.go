package podnet

import (
	"crypto/sha256"
	"net"
	"net/netip"
)

// PlumbTap is Plumb for a real VM: the same Pod topology (bridge k6t-eth0,
// 10.0.2.1/24 for Masquerade), but the guest's NIC is a qemu virtio-net
// device behind a real tap device tap0 on the bridge, as virt-handler
// creates it, instead of a veth into a guest namespace. Guest stays unset:
// the VM is the guest. GuestMAC is the MAC to give the VM's NIC (qemu's
// -device virtio-net-pci,mac=…), and GuestIP the address KubeVirt's DHCP
// hands it (see ServeDHCP); nothing in the Pod assigns it.
//
// Only Masquerade and LinkLocal have a bridge address to plumb this way; the
// bridge-binding topologies move the Pod's eth0, which a tap does not change,
// but their guest would need a static address a booting VM does not have.
func (p *Pod) PlumbTap(tb TB, t Topology) {
	tb.Helper()
	const bridge, tap = "k6t-eth0", "tap0"
	switch t {
	case Masquerade:
		p.GuestIP = netip.MustParsePrefix(MasqueradeGuestAddr + "/24")
	case LinkLocal:
		p.GuestIP = netip.MustParsePrefix("169.254.7.9/16")
	default:
		tb.Fatalf("PlumbTap: topology %s is not supported for a tap (want masquerade or link-local guest)", t)
	}
	p.Bridge = bridge
	p.Guest = NS{}
	// The same MAC convention as PlumbOn: the guest's from QEMU's 52:54:00
	// range, the tap's the same with fe as first octet, so the bridge never
	// takes the tap's address as its own.
	sum := sha256.Sum256([]byte(bridge))
	p.GuestMAC = net.HardwareAddr{0x52, 0x54, 0x00, sum[0], sum[1], sum[2]}
	tapMAC := net.HardwareAddr{0xfe, 0x54, 0x00, sum[0], sum[1], sum[2]}
	// A single-queue tap with virtio-net headers, as virt-handler creates it
	// for a VM without multi-queue: qemu's TUNSETIFF must match the queue
	// mode, and a multi_queue tap would refuse qemu's single-queue open.
	p.MustIP(tb, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
	p.MustIP(tb, "link", "set", tap, "address", tapMAC.String())

	// As in PlumbOn, the bridge appears last with the tap already enslaved,
	// in one batch: components watching for it see the finished topology.
	batch := []string{"link add " + bridge + " type bridge"}
	switch t {
	case Masquerade, LinkLocal:
		batch = append(batch, "addr add "+MasqueradeGatewayAddr+"/24 dev "+bridge)
	}
	p.raiseBridge(tb, batch, bridge, tap)
}
