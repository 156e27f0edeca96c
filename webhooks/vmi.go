package webhooks

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
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
	// Reader lists MetadataServices: the manager's cache (reads.go says why).
	Reader client.Reader
	// Live, when set, is asked when no cached service selects the VMI: a
	// MetadataService applied together with its VMs may not be cached yet.
	Live client.Reader
	// Sidecar is the Pod webhook's sidecar: where PodInjector will inject
	// none for Pod Security, no discovery data is set either.
	Sidecar SidecarOptions

	services liveServices
}

// Default mutates a VirtualMachineInstance on CREATE. It never fails: a VMI
// without discovery data still boots, and is reported.
func (d *DiscoveryDefaulter) Default(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) error {
	namespace := admittedNamespace(ctx, vmi)
	log := logf.FromContext(ctx).WithValues("namespace", namespace)
	mds, err := servingService(ctx, d.Reader, &d.services, d.Live, namespace, vmi.Labels)
	if err != nil {
		log.Error(err, "not setting guest discovery data")
		return nil
	}
	if mds == nil {
		return nil
	}
	if reason, msg := controllers.Unservable(mds, vmi); reason != "" {
		// No sidecar will serve it: a NoCloud serial would have cloud-init
		// wait on an address nobody answers.
		log.Info("not setting guest discovery data: the VM cannot be served", "reason", reason, "detail", msg)
		return nil
	}
	if forbidden, err := sidecarForbidden(ctx, d.Reader, d.Live, namespace, d.Sidecar); err != nil || forbidden != "" {
		// Nor where its launcher Pod will get no sidecar (PodInjector).
		if err != nil {
			log.Error(err, "not setting guest discovery data")
		} else {
			log.Info("not setting guest discovery data: the VM cannot be served", "reason", imdsv1alpha1.ReasonPodSecurityForbidsSidecar, "detail", forbidden)
		}
		return nil
	}
	mode := controllers.GuestDiscoveryOf(mds)
	want, have, applies := controllers.DiscoveryValue(mode, vmi)
	switch {
	case !applies || have == want:
		return nil
	case have != "" && !replacesGeneratedSerial(mode, vmi, have):
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
	case imdsv1alpha1.GuestDiscoveryEC2:
		// cloud-init identifies AWS by an SMBIOS UUID starting with ec2
		// (and, in 22.4, a serial equal to it), and only there uses
		// IMDSv2 tokens.
		if vmi.Spec.Domain.Firmware == nil {
			vmi.Spec.Domain.Firmware = &kubevirtv1.Firmware{}
		}
		vmi.Spec.Domain.Firmware.UUID = types.UID(want)
		vmi.Spec.Domain.Firmware.Serial = want
	}
	return nil
}

// replacesGeneratedSerial reports whether mode sets the serial and have is
// the one KubeVirt generated for the VM, which both such modes replace.
func replacesGeneratedSerial(mode imdsv1alpha1.GuestDiscovery, vmi *kubevirtv1.VirtualMachineInstance, have string) bool {
	setsSerial := mode == imdsv1alpha1.GuestDiscoveryNoCloud || mode == imdsv1alpha1.GuestDiscoveryEC2
	return setsSerial && controllers.KubeVirtGeneratedSerial(vmi, have)
}
