package controllers

import (
	"fmt"
	"strings"

	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/netconfig"
)

// Unservable says why mds cannot serve vmi's guest, as a reason constant of
// api/v1alpha1 and a message naming the NIC; both are empty when it can. The
// Pod webhook injects no sidecar into the launcher Pod of an unservable VMI
// (a sidecar waiting for a bridge that never comes would restart for ever),
// and the controller reports it. It is pure: both sides reach the same verdict
// from the same objects.
//
// The sidecar attaches to KubeVirt's in-Pod bridge of the NIC it serves
// (Serve.Bridge), which only the masquerade and bridge bindings have. Which
// NIC that is follows the payload's own rule (serveOn): spec.networkData.
// serveInterface, else the NIC on the pod network, else the first NIC. A VMI
// whose chosen NIC has no bridge is not served on another NIC behind the
// user's back: a guest sends to 169.254.169.254 along its default route,
// normally its primary NIC, so the choice is the user's; the message names
// the NICs serveInterface could choose instead.
func Unservable(mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance) (reason, message string) {
	devices := vmi.Spec.Domain.Devices
	if len(devices.Interfaces) == 0 && len(vmi.Spec.Networks) == 0 {
		if devices.AutoattachPodInterface != nil && !*devices.AutoattachPodInterface {
			return imdsv1alpha1.ReasonNoPodNetwork, "the VMI has no network interface (autoattachPodInterface is false)"
		}
		// virt-api adds the default pod network NIC (bridge or masquerade)
		// before anything else sees the VMI.
		return "", ""
	}
	nics := netconfig.FromVMI(vmi)
	serve := serveOn(mds, nics)
	if serve.Bridge != "" {
		return "", ""
	}
	if serve.Interface == "" {
		return imdsv1alpha1.ReasonNoPodNetwork, "the VMI has no network interface"
	}
	var chosen *payload.Interface
	for i := range nics.Interfaces {
		if nics.Interfaces[i].Name == serve.Interface {
			chosen = &nics.Interfaces[i]
		}
	}
	if chosen == nil {
		return imdsv1alpha1.ReasonServeInterfaceNotFound, fmt.Sprintf(
			"spec.networkData.serveInterface %q names no interface of the VMI%s", serve.Interface, alternatives(nics))
	}
	named := mds.Spec.NetworkData != nil && mds.Spec.NetworkData.ServeInterface != ""
	if !named && !chosen.Primary {
		return imdsv1alpha1.ReasonNoPodNetwork, fmt.Sprintf(
			"the VMI has no interface on the pod network, and its first interface %q uses the %s binding, which has no in-Pod bridge for 169.254.169.254%s",
			chosen.Name, chosen.Binding, alternatives(nics))
	}
	return imdsv1alpha1.ReasonUnsupportedBinding, fmt.Sprintf(
		"interface %q uses the %s binding, which has no in-Pod bridge for 169.254.169.254%s",
		chosen.Name, chosen.Binding, alternatives(nics))
}

// alternatives names the NICs spec.networkData.serveInterface could choose,
// as the end of a message.
func alternatives(nics *payload.Network) string {
	var names []string
	for _, nic := range nics.Interfaces {
		if nic.Bridge != "" {
			names = append(names, fmt.Sprintf("%q (%s)", nic.Name, nic.Binding))
		}
	}
	if len(names) == 0 {
		return " (only masquerade and bridge interfaces can be served)"
	}
	return "; spec.networkData.serveInterface can name " + strings.Join(names, " or ")
}
