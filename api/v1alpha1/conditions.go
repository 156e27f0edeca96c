package v1alpha1

// Condition types of MetadataService.
const (
	// ConditionReady is True when every VMI the service serves has a payload
	// rendered from the current spec and sources.
	ConditionReady = "Ready"
	// ConditionDegraded is True when something needs attention; the reason
	// says what.
	ConditionDegraded = "Degraded"
	// ConditionInstancesConfigured is True when every active virt-launcher
	// Pod of every served VMI runs the metadata sidecar, every served VMI can
	// be served, and every servable one carries the SMBIOS data of its guest
	// discovery mode; the reason says what is not.
	ConditionInstancesConfigured = "InstancesConfigured"
)

// Condition reasons of MetadataService.
const (
	// ReasonReconciled: every served VMI has a current payload.
	ReasonReconciled = "Reconciled"
	// ReasonNoInstances: the selector matches no VMI (Ready stays True).
	ReasonNoInstances = "NoInstancesSelected"
	// ReasonAsExpected: nothing needs attention (Degraded False).
	ReasonAsExpected = "AsExpected"
	// ReasonSourceNotFound: a referenced Secret, ConfigMap or key is missing.
	ReasonSourceNotFound = "SourceNotFound"
	// ReasonSourceTooLarge: resolved user-data or vendor-data exceeds 64 KiB.
	ReasonSourceTooLarge = "SourceTooLarge"
	// ReasonInvalidUserData: user-data or vendor-data is not a format
	// cloud-init accepts.
	ReasonInvalidUserData = "InvalidUserData"
	// ReasonInvalidNetworkData: the inline network configuration does not
	// parse as network-config version 2.
	ReasonInvalidNetworkData = "InvalidNetworkData"
	// ReasonInvalidSSHKeys: a public key is not in OpenSSH format.
	ReasonInvalidSSHKeys = "InvalidSSHKeys"
	// ReasonConflict: another MetadataService with a higher precedence serves
	// a VMI this one selects.
	ReasonConflict = "Conflict"
	// ReasonPayloadWriteFailed: writing a payload Secret failed.
	ReasonPayloadWriteFailed = "PayloadWriteFailed"
	// ReasonSidecarMissing: an active virt-launcher Pod of a served VMI (a
	// live migration's target Pod included) runs without the metadata sidecar
	// (the Pod webhook was unavailable or skipped it, for instance because the
	// payload Secret did not exist yet). A new launcher Pod gets it: restart
	// or live-migrate the VM.
	ReasonSidecarMissing = "SidecarMissing"
	// ReasonPodSecurityForbidsSidecar: with --sidecar-network-setup=sidecar
	// the sidecar is privileged, and the VMI's namespace enforces a Pod
	// Security level that would reject its launcher Pod with it; the Pod gets
	// no sidecar (and the VMI no discovery data), so that the VM still
	// starts. The node network setup (the default) serves such namespaces.
	ReasonPodSecurityForbidsSidecar = "PodSecurityForbidsSidecar"
	// ReasonGuestDiscoveryNotApplied: a served VMI lacks the SMBIOS serial or
	// asset tag of the service's guestDiscovery mode, because the user set
	// another value (which is never overwritten) or the VMI webhook did not
	// run.
	ReasonGuestDiscoveryNotApplied = "GuestDiscoveryNotApplied"
	// ReasonInstancesConfigured: every served VMI has its sidecar and guest
	// discovery data (InstancesConfigured True).
	ReasonInstancesConfigured = "InstancesConfigured"
	// ReasonReadFailed: the controller could not read what it needs (listing
	// MetadataServices, VMIs or virt-launcher Pods, or reading a referenced
	// Secret or ConfigMap failed with an API error). Ready and Degraded are
	// Unknown, payloads keep their last content, observedGeneration stays
	// where it was, and the controller retries.
	ReasonReadFailed = "ReadFailed"
)

// Labels and annotations the operator puts on payload Secrets.
const (
	// LabelManagedBy marks payload Secrets (value ManagedByValue).
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "kubevirt-imds"
	// LabelMetadataService names the MetadataService a payload was rendered from.
	LabelMetadataService = "imds.kubevirt.io/metadataservice"
	// LabelInstanceUID carries the VMI's UID.
	LabelInstanceUID = "imds.kubevirt.io/instance-uid"
	// AnnotationInstanceName carries the VMI's name (names can exceed label limits).
	AnnotationInstanceName = "imds.kubevirt.io/instance-name"
	// AnnotationPayloadHash carries the payload document's hash.
	AnnotationPayloadHash = "imds.kubevirt.io/payload-hash"
	// AnnotationServe carries where the payload places the sidecar (the
	// document's serve, as JSON), for the Pod webhook to read without the
	// document.
	AnnotationServe = "imds.kubevirt.io/serve"
)

// Reasons a selected VMI is not served: its virt-launcher Pod gets no
// sidecar, so that the VM starts exactly as it would without the product.
// They appear in status.unservableInstances, in the InstancesConfigured
// condition and in a Warning Event on the VMI.
const (
	// ReasonNoPodNetwork: the VMI has no NIC on a network KubeVirt plumbs
	// through an in-Pod bridge (no NICs at all, or autoattachPodInterface
	// false with only SR-IOV or binding-plugin NICs).
	ReasonNoPodNetwork = "NoServableInterface"
	// ReasonUnsupportedBinding: the NIC the service would serve uses a
	// binding without an in-Pod bridge (SR-IOV, passt, a network binding
	// plugin), so there is nothing to attach 169.254.169.254 to.
	ReasonUnsupportedBinding = "UnsupportedBinding"
	// ReasonServeInterfaceNotFound: networkData.serveInterface names a NIC
	// the VMI does not have.
	ReasonServeInterfaceNotFound = "ServeInterfaceNotFound"
)
