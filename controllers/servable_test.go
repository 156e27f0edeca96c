package controllers

import (
	"strings"
	"testing"

	kubevirtv1 "kubevirt.io/api/core/v1"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/netconfig"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

func TestUnservable(t *testing.T) {
	podNet := kubevirtv1.Network{Name: "default", NetworkSource: kubevirtv1.NetworkSource{Pod: &kubevirtv1.PodNetwork{}}}
	multus := func(name string) kubevirtv1.Network {
		return kubevirtv1.Network{Name: name, NetworkSource: kubevirtv1.NetworkSource{Multus: &kubevirtv1.MultusNetwork{NetworkName: name + "-nad"}}}
	}
	nic := func(name string, b kubevirtv1.InterfaceBindingMethod) kubevirtv1.Interface {
		return kubevirtv1.Interface{Name: name, InterfaceBindingMethod: b}
	}
	var (
		masquerade = kubevirtv1.InterfaceBindingMethod{Masquerade: &kubevirtv1.InterfaceMasquerade{}}
		bridge     = kubevirtv1.InterfaceBindingMethod{Bridge: &kubevirtv1.InterfaceBridge{}}
		sriov      = kubevirtv1.InterfaceBindingMethod{SRIOV: &kubevirtv1.InterfaceSRIOV{}}
		passtCore  = kubevirtv1.InterfaceBindingMethod{PasstBinding: &kubevirtv1.InterfacePasstBinding{}}
	)
	plugin := func(name string) kubevirtv1.Interface {
		return kubevirtv1.Interface{Name: "default", Binding: &kubevirtv1.PluginBinding{Name: name}}
	}
	// vmi is fixtures.VMI with its NICs replaced; no NICs and no networks
	// with autoattach false is the "no network at all" VMI.
	vmi := func(autoattach *bool, networks []kubevirtv1.Network, nics ...kubevirtv1.Interface) *kubevirtv1.VirtualMachineInstance {
		v := fixtures.VMI("ns", "vm", nil)
		v.Spec.Domain.Devices.AutoattachPodInterface = autoattach
		v.Spec.Domain.Devices.Interfaces = nics
		v.Spec.Networks = networks
		return v
	}
	serving := func(iface string) *imdsv1alpha1.MetadataService {
		m := fixtures.MetadataService("ns", "mds", imdsv1alpha1.MetadataServiceSpec{})
		if iface != "" {
			m.Spec.NetworkData = &imdsv1alpha1.NetworkDataSpec{Mode: imdsv1alpha1.NetworkDataAuto, ServeInterface: iface}
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		vmi      *kubevirtv1.VirtualMachineInstance
		serve    string // spec.networkData.serveInterface
		reason   string
		contains []string // in the message
	}{
		{name: "masquerade on the pod network", vmi: fixtures.VMI("ns", "vm", nil)},
		{name: "bridge on the pod network", vmi: vmi(nil, []kubevirtv1.Network{podNet}, nic("default", bridge))},
		{name: "no NICs yet: virt-api adds the pod network", vmi: vmi(nil, nil)},
		{name: "Multus secondary bridge only", vmi: vmi(ptr(false), []kubevirtv1.Network{multus("vlan10")}, nic("vlan10", bridge))},
		{name: "SR-IOV beside masquerade", vmi: vmi(nil, []kubevirtv1.Network{podNet, multus("fast")}, nic("default", masquerade), nic("fast", sriov))},
		{name: "serveInterface names a Multus bridge", serve: "storage",
			vmi: vmi(nil, []kubevirtv1.Network{podNet, multus("storage")}, nic("default", masquerade), nic("storage", bridge))},

		{name: "SR-IOV only", vmi: vmi(ptr(false), []kubevirtv1.Network{multus("fast")}, nic("fast", sriov)),
			reason: imdsv1alpha1.ReasonNoPodNetwork, contains: []string{`"fast"`, "sriov", "only masquerade and bridge"}},
		{name: "autoattachPodInterface false and no NICs", vmi: vmi(ptr(false), nil),
			reason: imdsv1alpha1.ReasonNoPodNetwork, contains: []string{"no network interface"}},
		{name: "NICs without networks", vmi: vmi(nil, nil, nic("default", masquerade)),
			reason: imdsv1alpha1.ReasonNoPodNetwork, contains: []string{"no network interface"}},
		{name: "passt binding plugin", vmi: vmi(nil, []kubevirtv1.Network{podNet}, plugin("passt")),
			reason: imdsv1alpha1.ReasonUnsupportedBinding, contains: []string{`"default"`, "passt binding"}},
		{name: "core passtBinding", vmi: vmi(nil, []kubevirtv1.Network{podNet}, nic("default", passtCore)),
			reason: imdsv1alpha1.ReasonUnsupportedBinding, contains: []string{"passt binding"}},
		{name: "another binding plugin, with a bridged secondary to choose", vmi: vmi(nil, []kubevirtv1.Network{podNet, multus("storage")}, plugin("managedtap"), nic("storage", bridge)),
			reason: imdsv1alpha1.ReasonUnsupportedBinding, contains: []string{"managedtap binding", `serveInterface can name "storage" (bridge)`}},
		{name: "serveInterface names an SR-IOV NIC", serve: "fast", vmi: vmi(nil, []kubevirtv1.Network{podNet, multus("fast")}, nic("default", masquerade), nic("fast", sriov)),
			reason: imdsv1alpha1.ReasonUnsupportedBinding, contains: []string{`"fast" uses the sriov binding`, `"default" (masquerade)`}},
		{name: "serveInterface names a missing NIC", serve: "nope", vmi: fixtures.VMI("ns", "vm", nil),
			reason: imdsv1alpha1.ReasonServeInterfaceNotFound, contains: []string{`"nope"`, `"default" (masquerade)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, message := Unservable(serving(tc.serve), tc.vmi)
			if reason != tc.reason {
				t.Fatalf("reason %q (%s), want %q", reason, message, tc.reason)
			}
			if (reason == "") != (message == "") {
				t.Errorf("reason %q with message %q", reason, message)
			}
			for _, s := range tc.contains {
				if !strings.Contains(message, s) {
					t.Errorf("message %q lacks %q", message, s)
				}
			}
			// What the sidecar would be told agrees: a servable VMI's
			// payload names a bridge to attach to.
			if bridge := serveOn(serving(tc.serve), netconfig.FromVMI(tc.vmi)).Bridge; (reason == "") != (bridge != "") && len(tc.vmi.Spec.Networks) > 0 {
				t.Errorf("payload bridge %q for reason %q", bridge, reason)
			}
		})
	}
}
