package webhooks

import (
	"context"

	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
)

// DiscoveryDefaulter sets, on a VMI's CREATE, the SMBIOS value by which the
// guest finds the metadata service of the MetadataService serving it. A value
// the user set is never overwritten; the controller reports it (an Event on
// the VMI and the InstancesConfigured condition), since at admission the VMI
// does not exist yet to carry an Event.
type DiscoveryDefaulter struct {
	// Reader lists MetadataServices: the API server itself
	// (SetupWithManager says why).
	Reader client.Reader
}

// Default mutates a VirtualMachineInstance on CREATE. It never fails: a VMI
// without discovery data still boots, and is reported.
func (d *DiscoveryDefaulter) Default(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) error {
	namespace := admittedNamespace(ctx, vmi)
	log := logf.FromContext(ctx).WithValues("namespace", namespace)
	var services imdsv1alpha1.MetadataServiceList
	if err := d.Reader.List(ctx, &services, client.InNamespace(namespace)); err != nil {
		log.Error(err, "not setting guest discovery data")
		return nil
	}
	mds := controllers.ServingMetadataService(services.Items, vmi.Labels)
	if mds == nil {
		return nil
	}
	mode := controllers.GuestDiscoveryOf(mds)
	want, have, applies := controllers.DiscoveryValue(mode, vmi)
	switch {
	case !applies || have == want:
		return nil
	case have != "":
		log.Info("keeping the VMI's own SMBIOS value", "guestDiscovery", mode, "value", have)
		return nil
	}
	switch mode {
	case imdsv1alpha1.GuestDiscoveryNoCloud:
		if vmi.Spec.Domain.Firmware == nil {
			vmi.Spec.Domain.Firmware = &kubevirtv1.Firmware{}
		}
		vmi.Spec.Domain.Firmware.Serial = want
	case imdsv1alpha1.GuestDiscoveryOpenStack:
		if vmi.Spec.Domain.Chassis == nil {
			vmi.Spec.Domain.Chassis = &kubevirtv1.Chassis{}
		}
		vmi.Spec.Domain.Chassis.Asset = want
	}
	return nil
}
