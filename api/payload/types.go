package payload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

const (
	// APIVersion identifies this schema. It is written into every document.
	APIVersion = "payload.imds.kubevirt.io/v1"
	// Kind is the document's kind.
	Kind = "InstancePayload"
	// SecretKey is the key of the payload Secret, and so the file name in the
	// sidecar's mounted directory, that holds the JSON document.
	SecretKey = "payload.json"
	// SharedKind is the shared document's kind.
	SharedKind = "SharedPayload"
	// SharedKey is the key of the shared payload Secret, and so the file name
	// beside SecretKey in the sidecar's mounted directory, that holds the
	// SharedDocument of the instance's MetadataService.
	SharedKey = "shared.json"
	// HashPrefix prefixes Document.Hash, naming the digest algorithm.
	HashPrefix = "sha256:"
)

// Dialect is a metadata API the sidecar serves.
type Dialect string

const (
	// DialectV1 is kubevirt-imds' own JSON API under /v1.
	DialectV1 Dialect = "v1"
	// DialectNoCloud is cloud-init's NoCloud datasource over HTTP under /nocloud/.
	DialectNoCloud Dialect = "nocloud"
	// DialectOpenStack is the OpenStack (nova) metadata API under /openstack,
	// with the EC2-compatible subset nova serves under /latest and /2009-04-04.
	DialectOpenStack Dialect = "openstack"
	// DialectEC2 is the EC2 instance metadata API under /latest and
	// /2009-04-04: IMDSv2 session tokens, the meta-data tree and the signed
	// instance identity document. The OpenStack dialect serves the same tree
	// (nova does); without this dialect tokens are never required there.
	DialectEC2 Dialect = "ec2"
)

// AllDialects lists every dialect, in the order the sidecar documents them.
var AllDialects = []Dialect{DialectV1, DialectNoCloud, DialectOpenStack, DialectEC2}

// Document is one instance's payload.
type Document struct {
	// APIVersion is always APIVersion.
	APIVersion string `json:"apiVersion"`
	// Kind is always Kind.
	Kind string `json:"kind"`

	// Instance is the instance's identity and descriptive metadata.
	Instance Instance `json:"instance"`

	// UserData is served verbatim as user-data (cloud-config, script, MIME
	// multipart or gzip). Encoded as base64 in JSON. Empty means none, or
	// that Shared holds it.
	UserData []byte `json:"userData,omitempty"`
	// VendorData is served verbatim as vendor-data. Empty means none, or
	// that Shared holds it.
	VendorData []byte `json:"vendorData,omitempty"`
	// Shared, when set, says that the user-data and vendor-data are not in
	// this document but in the SharedDocument beside it (SharedKey), which
	// its MetadataService keeps once for all the instances it serves: 10,000
	// instances then store one copy, and an edit of the user-data is one
	// write. The document served is WithShared's. Added after the first
	// release; the operator sets it only for Pods whose payload volume
	// carries the shared document, which only sidecars that know it mount.
	Shared *SharedRef `json:"shared,omitempty"`

	// Network is the guest's network configuration in a neutral model; nil
	// when the MetadataService's networkData mode is None (the guest then
	// keeps its own fallback configuration).
	Network *Network `json:"network,omitempty"`

	// Tokens are the ServiceAccount tokens the sidecar may hand out, one per
	// audience. The kubelet keeps the files fresh; the sidecar reads them on
	// each request.
	Tokens []Token `json:"tokens,omitempty"`

	// Dialects are the APIs the sidecar serves. A dialect not listed answers
	// 404 as if the path did not exist.
	Dialects []Dialect `json:"dialects"`

	// Serve says where the sidecar attaches to the VM's network.
	Serve Serve `json:"serve"`

	// Source names the MetadataService this document was rendered from.
	Source Source `json:"source"`

	// EC2 is what the EC2 dialect serves beyond the instance and network:
	// IMDSv2 settings, placement, instance type and the signed identity
	// document. Nil serves the tree without them (tokens optional). Added
	// after the first release: a sidecar that does not know it ignores it.
	EC2 *EC2 `json:"ec2,omitempty"`

	// Hash is HashPrefix followed by the hex SHA-256 of the document's bytes
	// as stored, with the value of this top-level member written as "" (see
	// Parse). It covers every byte, fields this version does not know
	// included, and changes exactly when the content changes; the sidecar
	// derives ETags from it and the operator writes a Secret only when it
	// differs.
	Hash string `json:"hash"`
}

// Instance is what the guest learns about itself.
type Instance struct {
	// ID is the cloud-init instance-id. A change makes cloud-init treat the
	// next boot as a new instance.
	ID string `json:"id"`
	// UID is the VirtualMachineInstance's UID.
	UID string `json:"uid"`
	// Name is the VirtualMachineInstance's name.
	Name string `json:"name"`
	// Namespace is the VirtualMachineInstance's namespace.
	Namespace string `json:"namespace"`
	// Hostname is the guest's host name (local-hostname).
	Hostname string `json:"hostname"`
	// ServiceAccountName is the ServiceAccount whose tokens the guest gets.
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// Tags are free-form key/value pairs (OpenStack meta, /v1 tags).
	Tags map[string]string `json:"tags,omitempty"`
	// Labels are the VMI labels the MetadataService exposes.
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are the VMI annotations the MetadataService exposes.
	Annotations map[string]string `json:"annotations,omitempty"`
	// SSHAuthorizedKeys are OpenSSH public keys, one per entry.
	SSHAuthorizedKeys []string `json:"sshAuthorizedKeys,omitempty"`
}

// HTTP token modes of the EC2 dialect, named as AWS names them.
const (
	// HTTPTokensOptional serves requests with or without a session token
	// (IMDSv1 and IMDSv2).
	HTTPTokensOptional = "optional"
	// HTTPTokensRequired answers 401 to a request on the EC2 paths without a
	// valid session token (IMDSv2 only).
	HTTPTokensRequired = "required"
)

// EC2 carries the EC2 dialect's settings and data.
type EC2 struct {
	// HTTPTokens is HTTPTokensOptional (also when empty) or
	// HTTPTokensRequired.
	HTTPTokens string `json:"httpTokens,omitempty"`
	// HopLimit is the IP TTL of the token PUT's response packets (AWS's
	// HttpPutResponseHopLimit); 0 means 1.
	HopLimit int `json:"hopLimit,omitempty"`
	// Region is placement/region, from the Node's topology.kubernetes.io/region
	// label; empty when unknown.
	Region string `json:"region,omitempty"`
	// AvailabilityZone is placement/availability-zone, from the Node's
	// topology.kubernetes.io/zone label; empty when unknown.
	AvailabilityZone string `json:"availabilityZone,omitempty"`
	// InstanceType is the VM's (cluster) instancetype name; empty when it has
	// none.
	InstanceType string `json:"instanceType,omitempty"`
	// Interfaces are the NICs of network/interfaces/macs/, the primary one
	// (device 0, meta-data/mac and local-ipv4) first. They are known whatever
	// the networkData mode.
	Interfaces []EC2Interface `json:"interfaces,omitempty"`
	// Identity is the instance identity document: signed when the ec2
	// dialect is served and the operator has a signing key, else the
	// document alone. Earlier operators left it out where they did not
	// sign.
	Identity *IdentityDocument `json:"identity,omitempty"`
}

// EC2Interface is one NIC of the EC2 meta-data tree.
type EC2Interface struct {
	// MACAddress is the NIC's MAC address, lower case, colon separated.
	MACAddress string `json:"macAddress"`
	// DeviceNumber is EC2's device-number: 0 for the primary NIC.
	DeviceNumber int `json:"deviceNumber"`
	// IPv4 are the guest's IPv4 addresses on the NIC in CIDR notation, the
	// first one its primary (local-ipv4s, subnet-ipv4-cidr-block).
	IPv4 []string `json:"ipv4,omitempty"`
}

// IdentityDocument is the instance identity document as the operator signed
// it, or the document alone (Signature, PKCS7 and CertificateSHA256 empty)
// where it does not sign. The sidecar serves each member that is present
// verbatim, lists only those, and holds no key.
type IdentityDocument struct {
	// Document is the JSON document, byte for byte as signed.
	Document string `json:"document"`
	// Signature is the base64 RSA PKCS #1 v1.5 SHA-256 signature of
	// Document.
	Signature string `json:"signature"`
	// PKCS7 is the base64 DER of a detached CMS SignedData over Document
	// (SHA-256, RSA 2048), served at pkcs7 and rsa2048.
	PKCS7 string `json:"pkcs7"`
	// CertificateSHA256 is the hex SHA-256 of the signing certificate's DER,
	// naming the key among the published certificates.
	CertificateSHA256 string `json:"certificateSHA256,omitempty"`
}

// Token describes one projected ServiceAccount token.
type Token struct {
	// Audience is the token's intended audience.
	Audience string `json:"audience"`
	// ExpirationSeconds is the requested validity of each token.
	ExpirationSeconds int64 `json:"expirationSeconds"`
	// Path is the token file, relative to the sidecar's token directory.
	Path string `json:"path"`
}

// Serve places the sidecar on the VM's network.
type Serve struct {
	// Interface is the VMI interface (spec.domain.devices.interfaces[].name)
	// whose guest is served.
	Interface string `json:"interface,omitempty"`
	// Bridge is the in-pod bridge KubeVirt plumbs for that interface, such as
	// k6t-eth0. Empty lets the sidecar pick the primary interface's bridge.
	Bridge string `json:"bridge,omitempty"`
}

// SharedRef names the shared document that completes a Document.
type SharedRef struct {
	// MetadataService is the name of the MetadataService whose shared
	// document holds the user-data and vendor-data; a shared document of
	// another service (the volume of a Pod started before the instance
	// changed service) does not complete this one.
	MetadataService string `json:"metadataService"`
}

// SharedDocument is what every instance of a MetadataService is served alike:
// stored once in the service's shared payload Secret, and mounted beside each
// instance's Document.
type SharedDocument struct {
	// APIVersion is always APIVersion.
	APIVersion string `json:"apiVersion"`
	// Kind is always SharedKind.
	Kind string `json:"kind"`
	// MetadataService is the name of the MetadataService it belongs to.
	MetadataService string `json:"metadataService"`
	// UserData is served verbatim as user-data. Empty means none.
	UserData []byte `json:"userData,omitempty"`
	// VendorData is served verbatim as vendor-data. Empty means none.
	VendorData []byte `json:"vendorData,omitempty"`
	// Hash is as Document.Hash: over the bytes as stored, with its own
	// value written as "".
	Hash string `json:"hash"`
}

// Seal sets APIVersion, Kind and Hash, and returns the JSON encoding that the
// operator stores.
func (d *SharedDocument) Seal() ([]byte, error) {
	d.APIVersion, d.Kind, d.Hash = APIVersion, SharedKind, ""
	out, sum, err := seal(d)
	d.Hash = sum
	return out, err
}

// ParseShared decodes and checks a stored shared document as Parse does a
// Document: this package's apiVersion, the shared kind, a service name and a
// hash that matches the bytes.
func ParseShared(data []byte) (*SharedDocument, error) {
	var d SharedDocument
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("decoding shared payload document: %w", err)
	}
	if d.APIVersion != APIVersion || d.Kind != SharedKind {
		return nil, fmt.Errorf("shared payload document: apiVersion %q and kind %q, want %q and %q", d.APIVersion, d.Kind, APIVersion, SharedKind)
	}
	if d.MetadataService == "" {
		return nil, errors.New("shared payload document: metadataService is empty")
	}
	sum, _, err := rawHash(data)
	if err != nil {
		return nil, err
	}
	if sum != d.Hash {
		return nil, fmt.Errorf("shared payload document: hash %q does not match content (%s)", d.Hash, sum)
	}
	return &d, nil
}

// ErrSharedMissing is WithShared's error when d needs a shared document and
// none, or another service's, is at hand.
var ErrSharedMissing = errors.New("the shared payload document of the instance's MetadataService is not there")

// WithShared returns the document served to the guest: d itself when it
// holds its user-data and vendor-data, else a copy with those of s, whose
// Hash covers both documents' hashes (so ETags change when either does).
func (d *Document) WithShared(s *SharedDocument) (*Document, error) {
	if d.Shared == nil {
		return d, nil
	}
	if s == nil || s.MetadataService != d.Shared.MetadataService {
		return nil, fmt.Errorf("document of instance %s needs the shared document of MetadataService %q: %w",
			d.Instance.ID, d.Shared.MetadataService, ErrSharedMissing)
	}
	c := *d
	c.UserData, c.VendorData = s.UserData, s.VendorData
	sum := sha256.Sum256([]byte(d.Hash + "\n" + s.Hash))
	c.Hash = HashPrefix + hex.EncodeToString(sum[:])
	return &c, nil
}

// Source names where a document came from.
type Source struct {
	// MetadataService is the name of the MetadataService, in Instance.Namespace.
	MetadataService string `json:"metadataService"`
}

// Network is a dialect-neutral network configuration. The sidecar renders it
// as cloud-init network-config v1 and v2, ENI text, and OpenStack
// network_data.json.
type Network struct {
	// Interfaces are the guest's NICs in VMI order; the first one with
	// Primary set carries the default route.
	Interfaces []Interface `json:"interfaces"`
	// Nameservers apply to the whole guest.
	Nameservers *Nameservers `json:"nameservers,omitempty"`
	// NetplanV2 is the user's own network-config version 2 document (networkData
	// mode Inline), served verbatim where a dialect speaks version 2. Interfaces
	// then hold the same configuration parsed into this model, for the
	// dialects that do not.
	NetplanV2 string `json:"netplanV2,omitempty"`
}

// Interface is one guest NIC.
type Interface struct {
	// Name is the VMI interface name (logical; guests name NICs themselves and
	// are matched by MAC address).
	Name string `json:"name"`
	// MACAddress is the NIC's MAC address, lower case, colon separated. Empty
	// when neither the VMI spec nor its status knows it yet.
	MACAddress string `json:"macAddress,omitempty"`
	// MTU of the link; 0 keeps the guest's default.
	MTU int `json:"mtu,omitempty"`
	// Binding is how KubeVirt connects the NIC: masquerade, bridge, sriov,
	// passt, or a binding plugin's name.
	Binding string `json:"binding,omitempty"`
	// Network is the VMI network (spec.networks[].name) the NIC is backed by.
	Network string `json:"network,omitempty"`
	// PodInterface is the Pod's interface for that network: eth0 for the pod
	// network, a hashed name (pod…) for Multus secondaries.
	PodInterface string `json:"podInterface,omitempty"`
	// Bridge is KubeVirt's in-pod bridge for the NIC (k6t-…); empty for
	// bindings without one (sriov, passt, binding plugins).
	Bridge string `json:"bridge,omitempty"`
	// Primary marks the NIC on the Pod's primary network.
	Primary bool `json:"primary,omitempty"`
	// Optional tells the guest not to wait for this NIC at boot (netplan
	// "optional"), for networks whose addressing the operator cannot know.
	Optional bool `json:"optional,omitempty"`
	// DHCP4 asks the guest to configure IPv4 by DHCP.
	DHCP4 bool `json:"dhcp4,omitempty"`
	// DHCP6 asks the guest to configure IPv6 by DHCPv6.
	DHCP6 bool `json:"dhcp6,omitempty"`
	// Addresses are static addresses in CIDR notation.
	Addresses []string `json:"addresses,omitempty"`
	// Gateway4 is the IPv4 default gateway for static configuration.
	Gateway4 string `json:"gateway4,omitempty"`
	// Gateway6 is the IPv6 default gateway for static configuration.
	Gateway6 string `json:"gateway6,omitempty"`
	// Routes are additional static routes.
	Routes []Route `json:"routes,omitempty"`
	// Nameservers specific to this NIC.
	Nameservers *Nameservers `json:"nameservers,omitempty"`
}

// Route is a static route.
type Route struct {
	// To is the destination in CIDR notation (0.0.0.0/0 for a default route).
	To string `json:"to"`
	// Via is the next hop; empty for an on-link route.
	Via string `json:"via,omitempty"`
	// Metric is the route metric; 0 leaves it to the guest.
	Metric int `json:"metric,omitempty"`
}

// Nameservers is DNS resolver configuration.
type Nameservers struct {
	// Addresses are resolver IP addresses.
	Addresses []string `json:"addresses,omitempty"`
	// Search are search domains.
	Search []string `json:"search,omitempty"`
}

// ComputeHash returns the content hash of d as Seal would store it:
// HashPrefix and the hex SHA-256 of d's JSON encoding with Hash empty.
func (d *Document) ComputeHash() (string, error) {
	c := *d
	c.Hash = ""
	data, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("encoding payload document: %w", err)
	}
	sum, _, err := rawHash(data)
	return sum, err
}

// Seal sets APIVersion, Kind and Hash, and returns the JSON encoding that the
// operator stores.
func (d *Document) Seal() ([]byte, error) {
	d.APIVersion, d.Kind = APIVersion, Kind
	d.Hash = ""
	out, sum, err := seal(d)
	d.Hash = sum
	return out, err
}

// seal encodes v, whose hash member is "", and returns the encoding with the
// hash written in, and the hash.
func seal(v any) ([]byte, string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, "", fmt.Errorf("encoding payload document: %w", err)
	}
	sum, span, err := rawHash(data)
	if err != nil {
		return nil, "", err
	}
	// The hash goes into the very bytes it was computed over, so that Parse
	// verifies exactly what was written.
	quoted := strconv.Quote(sum)
	out := make([]byte, 0, len(data)+len(quoted))
	out = append(out, data[:span[0]]...)
	out = append(out, quoted...)
	return append(out, data[span[1]:]...), sum, nil
}

// Parse decodes and checks a stored document: the apiVersion must be this
// package's, the instance must have an ID and the hash must match the bytes,
// so a truncated or hand-edited file is never served.
//
// The hash is checked over data as written, not over a re-encoding of the
// fields this version knows: fields are added within an apiVersion, and a
// sidecar must accept a document from a newer operator (one minor version
// apart during an upgrade, in either direction) and serve what it knows of
// it. The fields it does not know are ignored.
func Parse(data []byte) (*Document, error) {
	var d Document
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("decoding payload document: %w", err)
	}
	if d.APIVersion != APIVersion {
		return nil, fmt.Errorf("payload document: apiVersion %q, want %q", d.APIVersion, APIVersion)
	}
	if d.Instance.ID == "" {
		return nil, errors.New("payload document: instance.id is empty")
	}
	sum, _, err := rawHash(data)
	if err != nil {
		return nil, err
	}
	if sum != d.Hash {
		return nil, fmt.Errorf("payload document: hash %q does not match content (%s)", d.Hash, sum)
	}
	return &d, nil
}

// rawHash returns the content hash of the encoded document data, and the
// byte span of the value of its top-level hash member: HashPrefix and the hex
// SHA-256 of data with that value replaced by "". Exactly one top-level member
// may be named hash in any letter case (encoding/json matches names without
// regard to case), so that the value checked is the value decoded.
func rawHash(data []byte) (string, [2]int, error) {
	var span [2]int
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", span, errors.New("payload document: not a JSON object")
	}
	found := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", span, fmt.Errorf("decoding payload document: %w", err)
		}
		key, _ := tok.(string)
		// After the key come optional white space, the colon and optional
		// white space again; the value starts there.
		start := int(dec.InputOffset())
		for start < len(data) && (isJSONSpace(data[start]) || data[start] == ':') {
			start++
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return "", span, fmt.Errorf("decoding payload document: %w", err)
		}
		if !strings.EqualFold(key, "hash") {
			continue
		}
		if found {
			return "", span, errors.New("payload document: more than one hash member")
		}
		found = true
		span = [2]int{start, int(dec.InputOffset())}
		if !bytes.Equal(data[span[0]:span[1]], value) || value[0] != '"' {
			return "", span, errors.New("payload document: hash is not a string")
		}
	}
	if !found {
		return "", span, errors.New("payload document: no hash member")
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return "", span, errors.New("payload document: not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", span, errors.New("payload document: data after the JSON object")
	}
	h := sha256.New()
	h.Write(data[:span[0]])
	h.Write([]byte(`""`))
	h.Write(data[span[1]:])
	return HashPrefix + hex.EncodeToString(h.Sum(nil)), span, nil
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Serves reports whether the document enables dialect.
func (d *Document) Serves(dialect Dialect) bool {
	return slices.Contains(d.Dialects, dialect)
}

// PrimaryFirst orders NICs by their Primary flags, the primary one first and
// the others as they were (for slices.SortStableFunc): the order in which
// the EC2 tree numbers devices, so that operator and sidecar agree on it.
func PrimaryFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// TokenVolumeName names the projected volume (and the directory below the
// token root) that holds the token for audience. Operator and Pod webhook both
// derive it, so neither has to tell the other.
func TokenVolumeName(audience string) string {
	sum := sha256.Sum256([]byte(audience))
	return "imds-token-" + hex.EncodeToString(sum[:])[:10]
}

// TokenFileName is the file name of the token inside its volume.
const TokenFileName = "token"

// TokenPath is the token file for audience relative to the token root.
func TokenPath(audience string) string {
	return TokenVolumeName(audience) + "/" + TokenFileName
}
