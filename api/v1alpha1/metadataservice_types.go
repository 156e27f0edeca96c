package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxDataBytes caps user-data and vendor-data after their sources are resolved,
// as OpenStack caps user_data: a guest's metadata service is no blob store.
const MaxDataBytes = 64 * 1024

// MetadataServiceSpec selects VirtualMachineInstances and defines what the
// metadata service tells each of them.
// +kubebuilder:validation:XValidation:rule="!has(self.hostname) || self.hostname.replace('{name}', 'x').replace('{namespace}', 'x').matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="hostname must be a lower-case RFC 1123 label once {name} and {namespace} are substituted"
type MetadataServiceSpec struct {
	// Selector selects VirtualMachineInstances in this namespace by label. An
	// empty selector selects every VirtualMachineInstance in the namespace.
	// +optional
	Selector metav1.LabelSelector `json:"selector,omitempty"`

	// Priority decides which MetadataService serves a VirtualMachineInstance
	// that several select: the highest priority wins, then the oldest, then the
	// name that sorts first. The others report a Conflict.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=-1000000
	// +kubebuilder:validation:Maximum=1000000
	Priority int32 `json:"priority,omitempty"`

	// Identity configures the ServiceAccount tokens the guest can fetch. The
	// identity is the VirtualMachineInstance's own ServiceAccount (from its
	// serviceAccount volume, else the namespace's default).
	// +optional
	Identity *IdentitySpec `json:"identity,omitempty"`

	// UserData is served to the guest as user-data (cloud-config, a script,
	// MIME multipart or gzip), at most 64 KiB once resolved.
	// +optional
	UserData *DataSource `json:"userData,omitempty"`

	// VendorData is served to the guest as vendor-data, at most 64 KiB once
	// resolved.
	// +optional
	VendorData *DataSource `json:"vendorData,omitempty"`

	// NetworkData configures the network configuration served to the guest.
	// +optional
	NetworkData *NetworkDataSpec `json:"networkData,omitempty"`

	// Metadata adds descriptive metadata to the instance document.
	// +optional
	Metadata *MetadataSpec `json:"metadata,omitempty"`

	// Hostname is the guest's host name. "{name}" and "{namespace}" are
	// replaced by the VirtualMachineInstance's name and namespace. Default: the
	// VirtualMachineInstance's spec.hostname, else its name.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Hostname string `json:"hostname,omitempty"`

	// SSHAuthorizedKeys are OpenSSH public keys installed for the guest's
	// default user.
	// +optional
	SSHAuthorizedKeys *SSHKeysSource `json:"sshAuthorizedKeys,omitempty"`

	// GuestDiscovery is how guests find the service without configuration:
	// NoCloud sets the SMBIOS serial that points cloud-init's NoCloud
	// datasource at the service; OpenStack sets the chassis asset tag that makes
	// cloud-init and cloudbase-init use their OpenStack datasources; EC2 gives
	// the VM an SMBIOS UUID starting with "ec2" (and the same serial), by which
	// cloud-init identifies AWS and, in an image configured for its Ec2
	// datasource, uses IMDSv2; None changes nothing.
	// +optional
	// +kubebuilder:default=NoCloud
	GuestDiscovery GuestDiscovery `json:"guestDiscovery,omitempty"`

	// Dialects are the metadata APIs the sidecar serves. Default: all.
	// The EC2 paths (/latest, /2009-04-04) are served with openstack or ec2;
	// the identity document and required session tokens need ec2.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:default={v1,nocloud,openstack,ec2}
	Dialects []Dialect `json:"dialects,omitempty"`

	// EC2 configures the EC2 dialect's instance metadata options, as AWS
	// names them.
	// +optional
	EC2 *EC2Spec `json:"ec2,omitempty"`
}

// HTTPTokens says whether the EC2 dialect requires IMDSv2 session tokens.
// +kubebuilder:validation:Enum=optional;required
type HTTPTokens string

const (
	// HTTPTokensOptional serves EC2 requests with or without a session
	// token (IMDSv1 and IMDSv2).
	HTTPTokensOptional HTTPTokens = "optional"
	// HTTPTokensRequired answers 401 to an EC2 request without a valid
	// session token (IMDSv2 only).
	HTTPTokensRequired HTTPTokens = "required"
)

// EC2Spec configures the EC2 dialect.
type EC2Spec struct {
	// HTTPTokens is optional (IMDSv1 and IMDSv2) or required (IMDSv2 only).
	// Default optional: AWS's RunInstances default unless the image declares
	// IMDSv2 support, and what cloudbase-init and cloud-init's OpenStack
	// datasource (which read the EC2 tree without tokens) need.
	// +optional
	// +kubebuilder:default=optional
	HTTPTokens HTTPTokens `json:"httpTokens,omitempty"`

	// HTTPPutResponseHopLimit is the IP TTL of the token PUT's response: 1
	// reaches the guest itself, 2 a container behind a bridge in the guest.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	HTTPPutResponseHopLimit int32 `json:"httpPutResponseHopLimit,omitempty"`
}

// IdentitySpec configures the workload identity handed to the guest.
type IdentitySpec struct {
	// ServiceAccountTokens are the tokens the guest can fetch, one per
	// audience. The kubelet requests and rotates them.
	// +optional
	// +listType=map
	// +listMapKey=audience
	// +kubebuilder:validation:MaxItems=8
	ServiceAccountTokens []ServiceAccountTokenSpec `json:"serviceAccountTokens,omitempty"`
}

// ServiceAccountTokenSpec is one audience-scoped projected token.
type ServiceAccountTokenSpec struct {
	// Audience is the token's intended audience (the "aud" claim).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Audience string `json:"audience"`

	// ExpirationSeconds is each token's validity; the kubelet rotates it at 80%.
	// +optional
	// +kubebuilder:default=3600
	// +kubebuilder:validation:Minimum=600
	// +kubebuilder:validation:Maximum=86400
	ExpirationSeconds int64 `json:"expirationSeconds,omitempty"`
}

// DataSource is data given inline or read from a key of a Secret or a
// ConfigMap in the MetadataService's namespace. Exactly one is set.
// +kubebuilder:validation:XValidation:rule="[has(self.inline), has(self.secretRef), has(self.configMapRef)].filter(x, x).size() == 1",message="exactly one of inline, secretRef and configMapRef must be set"
type DataSource struct {
	// Inline is the data itself.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	Inline *string `json:"inline,omitempty"`

	// SecretRef reads the data from a key of a Secret.
	// +optional
	SecretRef *KeyReference `json:"secretRef,omitempty"`

	// ConfigMapRef reads the data from a key of a ConfigMap (data or
	// binaryData).
	// +optional
	ConfigMapRef *KeyReference `json:"configMapRef,omitempty"`
}

// KeyReference names one key of a Secret or ConfigMap in the same namespace.
type KeyReference struct {
	// Name of the Secret or ConfigMap.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key within it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// SSHKeysSource gives OpenSSH public keys inline or from a Secret key holding
// one key per line. Exactly one is set.
// +kubebuilder:validation:XValidation:rule="has(self.inline) != has(self.secretRef)",message="exactly one of inline and secretRef must be set"
type SSHKeysSource struct {
	// Inline keys, one per entry.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=16384
	// +kubebuilder:validation:items:Pattern=`^(ssh-|ecdsa-|sk-)[-a-z0-9@.]+ [A-Za-z0-9+/=]+( .*)?$`
	Inline []string `json:"inline,omitempty"`

	// SecretRef reads keys, one per line, from a key of a Secret.
	// +optional
	SecretRef *KeyReference `json:"secretRef,omitempty"`
}

// NetworkDataMode chooses where the guest's network configuration comes from.
// +kubebuilder:validation:Enum=Auto;Inline;None
type NetworkDataMode string

const (
	// NetworkDataAuto derives each guest's configuration from its VMI:
	// interfaces, networks (pod network, Multus secondaries), bindings
	// (masquerade, bridge, SR-IOV) and, where present, status.interfaces.
	NetworkDataAuto NetworkDataMode = "Auto"
	// NetworkDataInline serves the cloud-init network-config version 2 given
	// in networkData.config.
	NetworkDataInline NetworkDataMode = "Inline"
	// NetworkDataNone serves no network configuration: guests keep their own.
	NetworkDataNone NetworkDataMode = "None"
)

// NetworkDataSpec configures the network configuration served to guests.
// +kubebuilder:validation:XValidation:rule="self.mode == 'Inline' ? has(self.config) : !has(self.config)",message="config is required with mode Inline and not allowed otherwise"
type NetworkDataSpec struct {
	// Mode is Auto, Inline or None.
	// +optional
	// +kubebuilder:default=Auto
	Mode NetworkDataMode `json:"mode,omitempty"`

	// Config is a cloud-init network-config version 2 document (YAML), with
	// mode Inline.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	Config *string `json:"config,omitempty"`

	// ServeInterface is the VMI interface (spec.domain.devices.interfaces[].name)
	// whose guest network the sidecar attaches to. Default: the interface on
	// the pod network, else the first interface.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	ServeInterface string `json:"serveInterface,omitempty"`
}

// MetadataSpec adds descriptive metadata to the instance document.
type MetadataSpec struct {
	// Tags are key/value pairs served to the guest (OpenStack meta, /v1 tags).
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 255 && self[k].size() <= 255)",message="tag keys and values must be at most 255 characters"
	Tags map[string]string `json:"tags,omitempty"`

	// ExposeLabels are VMI label keys whose values are copied into the
	// instance document.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=317
	ExposeLabels []string `json:"exposeLabels,omitempty"`

	// ExposeAnnotations are VMI annotation keys whose values are copied into
	// the instance document.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=317
	ExposeAnnotations []string `json:"exposeAnnotations,omitempty"`
}

// GuestDiscovery is how a guest finds the metadata service on its own.
// +kubebuilder:validation:Enum=NoCloud;OpenStack;EC2;None
type GuestDiscovery string

const (
	// GuestDiscoveryNoCloud points cloud-init's NoCloud datasource at the
	// service through the SMBIOS system serial number.
	GuestDiscoveryNoCloud GuestDiscovery = "NoCloud"
	// GuestDiscoveryOpenStack identifies the platform as OpenStack through the
	// SMBIOS chassis asset tag.
	GuestDiscoveryOpenStack GuestDiscovery = "OpenStack"
	// GuestDiscoveryEC2 gives the VMI a firmware UUID starting with "ec2"
	// (the VMI's own with its first three digits replaced, so it stays the
	// same across restarts) and the same SMBIOS serial: cloud-init then
	// identifies the platform as AWS and its Ec2 datasource uses IMDSv2.
	GuestDiscoveryEC2 GuestDiscovery = "EC2"
	// GuestDiscoveryNone leaves the VMI's SMBIOS data alone.
	GuestDiscoveryNone GuestDiscovery = "None"
)

// Dialect is a metadata API the sidecar serves.
// +kubebuilder:validation:Enum=v1;nocloud;openstack;ec2
type Dialect string

// MetadataServiceStatus is the observed state of a MetadataService.
type MetadataServiceStatus struct {
	// Conditions: Ready (every VMI this service serves has a current
	// payload), Degraded (something needs attention; the reason says what)
	// and InstancesConfigured (every served VMI runs the sidecar and carries
	// its guest discovery data). After a failed read Ready and Degraded are
	// Unknown (reason ReadFailed), never True.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// SelectedInstances is how many VirtualMachineInstances this service
	// serves (selected and not won by a higher-priority service), those in
	// unservableInstances included.
	// +optional
	SelectedInstances int32 `json:"selectedInstances"`

	// UnservableInstances are the selected VirtualMachineInstances whose
	// guest the sidecar cannot reach (no NIC with an in-Pod bridge: SR-IOV,
	// passt or binding-plugin NICs, no pod network, a serveInterface that
	// names no NIC). Their virt-launcher Pods get no sidecar and start as
	// without the service. Sorted by name; at most 20 are listed, the
	// InstancesConfigured condition gives the count.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=20
	UnservableInstances []UnservableInstance `json:"unservableInstances,omitempty"`

	// IdentityCertificates are the PEM certificates that verify the EC2
	// instance identity documents (dynamic/instance-identity/), the current
	// signing key's first; a rotated key's stays listed until it expires.
	// The ConfigMap kubevirt-imds-identity-certificates in the operator's
	// namespace holds the same.
	// +optional
	// +listType=atomic
	IdentityCertificates []string `json:"identityCertificates,omitempty"`

	// ObservedGeneration is the generation the status describes: it moves
	// when a reconcile of that generation read everything it needed and
	// wrote every payload, and stays when one failed (the reason
	// ReadFailed or PayloadWriteFailed says so).
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// UnservableInstance is a selected VMI the service cannot serve, and why.
type UnservableInstance struct {
	// Name is the VirtualMachineInstance's name.
	Name string `json:"name"`
	// Reason is NoServableInterface, UnsupportedBinding or
	// ServeInterfaceNotFound.
	Reason string `json:"reason"`
	// Message says which interface and what would make it servable.
	Message string `json:"message"`
}

// MetadataService serves instance metadata, user-data, vendor-data, network
// configuration and ServiceAccount tokens to the KubeVirt
// VirtualMachineInstances it selects, at 169.254.169.254 inside each VM's Pod.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mds,categories=kubevirt
// +kubebuilder:printcolumn:name="Selected",type=integer,JSONPath=`.status.selectedInstances`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters (it is used as a label value)"
type MetadataService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired behaviour.
	// +optional
	Spec MetadataServiceSpec `json:"spec,omitempty"`
	// Status is the observed state.
	// +optional
	Status MetadataServiceStatus `json:"status,omitempty"`
}

// MetadataServiceList is a list of MetadataServices.
// +kubebuilder:object:root=true
type MetadataServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the MetadataServices.
	Items []MetadataService `json:"items"`
}
