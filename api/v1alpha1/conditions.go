package v1alpha1

// Condition types of MetadataService.
const (
	// ConditionReady is True when every VMI the service serves has a payload
	// rendered from the current spec and sources.
	ConditionReady = "Ready"
	// ConditionDegraded is True when something needs attention; the reason
	// says what.
	ConditionDegraded = "Degraded"
	// ConditionInstancesConfigured is True when the virt-launcher Pod of every
	// served VMI runs the metadata sidecar and every served VMI carries the
	// SMBIOS data of its guest discovery mode; the reason says what is not.
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
	// ReasonSidecarMissing: the virt-launcher Pod of a served VMI runs without
	// the metadata sidecar (the Pod webhook was unavailable or skipped it,
	// for instance because the payload Secret did not exist yet). The VMI must
	// be restarted to get it.
	ReasonSidecarMissing = "SidecarMissing"
	// ReasonGuestDiscoveryNotApplied: a served VMI lacks the SMBIOS serial or
	// asset tag of the service's guestDiscovery mode, because the user set
	// another value (which is never overwritten) or the VMI webhook did not
	// run.
	ReasonGuestDiscoveryNotApplied = "GuestDiscoveryNotApplied"
	// ReasonInstancesConfigured: every served VMI has its sidecar and guest
	// discovery data (InstancesConfigured True).
	ReasonInstancesConfigured = "InstancesConfigured"
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
)
