package netconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"

	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// KubeVirt's in-pod naming (kubevirt.io/kubevirt pkg/network/namescheme and
// pkg/network/link): the primary network uses the Pod's eth0; a Multus
// secondary uses "pod" + the first 11 hex digits of SHA-256(network name), and
// its bridge drops the "pod" prefix: k6t-<hash>.
const (
	primaryPodInterface = "eth0"
	hashedIfacePrefix   = "pod"
	hashedIfaceLen      = 11
	bridgePrefix        = "k6t-"
)

// Binding names used in the neutral model.
const (
	BindingMasquerade = "masquerade"
	BindingBridge     = "bridge"
	BindingSRIOV      = "sriov"
	BindingPasst      = "passt"
)

// PodInterfaceName is the Pod interface KubeVirt creates for network: eth0 for
// the pod network (or its podInterfaceName from status) and a hashed name for
// Multus secondaries.
func PodInterfaceName(network kubevirtv1.Network, status *kubevirtv1.VirtualMachineInstanceNetworkInterface) string {
	if isSecondary(network) {
		sum := sha256.Sum256([]byte(network.Name))
		return hashedIfacePrefix + hex.EncodeToString(sum[:])[:hashedIfaceLen]
	}
	if status != nil && status.PodInterfaceName != "" {
		return status.PodInterfaceName
	}
	return primaryPodInterface
}

// BridgeName is the in-pod bridge KubeVirt plumbs for a Pod interface.
func BridgeName(podInterface string) string {
	return bridgePrefix + strings.TrimPrefix(podInterface, hashedIfacePrefix)
}

func isSecondary(n kubevirtv1.Network) bool {
	return n.Multus != nil && !n.Multus.Default
}

func isPrimary(n kubevirtv1.Network) bool {
	return n.Pod != nil || (n.Multus != nil && n.Multus.Default)
}

// FromVMI derives the guest's network configuration from the VMI.
//
//   - masquerade: KubeVirt's in-pod DHCP serves the guest 10.0.2.2 (and
//     DHCPv6 on dual-stack Pods), so the NIC is DHCP.
//   - bridge on the pod network: KubeVirt's in-pod DHCP serves the Pod's IP.
//   - Multus secondaries and SR-IOV: the operator cannot see the network's
//     addressing, so the NIC is DHCP and optional (the guest does not wait for
//     it at boot).
//
// MAC addresses come from the spec, else from status.interfaces. Addresses in
// status.interfaces carry no prefix length, so they never become static
// configuration.
func FromVMI(vmi *kubevirtv1.VirtualMachineInstance) *payload.Network {
	networks := map[string]kubevirtv1.Network{}
	for _, n := range vmi.Spec.Networks {
		networks[n.Name] = n
	}
	statuses := map[string]*kubevirtv1.VirtualMachineInstanceNetworkInterface{}
	for i := range vmi.Status.Interfaces {
		statuses[vmi.Status.Interfaces[i].Name] = &vmi.Status.Interfaces[i]
	}

	out := &payload.Network{Interfaces: []payload.Interface{}}
	for _, iface := range vmi.Spec.Domain.Devices.Interfaces {
		network, ok := networks[iface.Name]
		if !ok {
			// KubeVirt rejects such a VMI; nothing sensible to serve for it.
			continue
		}
		status := statuses[iface.Name]
		nic := payload.Interface{
			Name:         iface.Name,
			Network:      network.Name,
			Binding:      bindingName(iface),
			MACAddress:   macAddress(iface, status),
			PodInterface: PodInterfaceName(network, status),
			Primary:      isPrimary(network),
			DHCP4:        true,
		}
		if HasBridge(nic.Binding) {
			nic.Bridge = BridgeName(nic.PodInterface)
		}
		switch {
		case nic.Primary && nic.Binding == BindingMasquerade:
			nic.DHCP6 = hasGlobalIPv6(status)
		case nic.Primary && nic.Binding == BindingBridge:
		default:
			nic.Optional = true
		}
		out.Interfaces = append(out.Interfaces, nic)
	}
	return out
}

// HasBridge reports whether KubeVirt plumbs a NIC of binding through an
// in-Pod bridge k6t-…: only masquerade and bridge do (pkg/network/setup in
// KubeVirt). SR-IOV passes a device through, passt runs in user mode, and a
// network binding plugin (passt, macvtap, managedtap, …) brings its own
// plumbing; none leaves a bridge to attach 169.254.169.254 to.
func HasBridge(binding string) bool {
	return binding == BindingMasquerade || binding == BindingBridge
}

func bindingName(iface kubevirtv1.Interface) string {
	switch {
	case iface.Masquerade != nil:
		return BindingMasquerade
	case iface.Bridge != nil:
		return BindingBridge
	case iface.SRIOV != nil:
		return BindingSRIOV
	case iface.PasstBinding != nil, iface.DeprecatedPasst != nil:
		return BindingPasst
	case iface.Binding != nil:
		return iface.Binding.Name
	case iface.DeprecatedSlirp != nil:
		return "slirp"
	case iface.DeprecatedMacvtap != nil:
		return "macvtap"
	}
	// KubeVirt defaults an interface without a binding to bridge.
	return BindingBridge
}

func macAddress(iface kubevirtv1.Interface, status *kubevirtv1.VirtualMachineInstanceNetworkInterface) string {
	mac := iface.MacAddress
	if mac == "" && status != nil {
		mac = status.MAC
	}
	return strings.ToLower(strings.ReplaceAll(mac, "-", ":"))
}

// hasGlobalIPv6 reports whether the Pod side of an interface has a global
// IPv6 address, which is when KubeVirt's masquerade serves DHCPv6.
func hasGlobalIPv6(status *kubevirtv1.VirtualMachineInstanceNetworkInterface) bool {
	if status == nil {
		return false
	}
	for _, s := range append([]string{status.IP}, status.IPs...) {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() && a.IsGlobalUnicast() {
			return true
		}
	}
	return false
}
