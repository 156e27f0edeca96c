package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
)

// payloadSecretPrefix starts every payload Secret's name.
const payloadSecretPrefix = "imds-"

// maxObjectName is the longest DNS subdomain, the limit of a Secret's name.
const maxObjectName = 253

// PayloadSecretName is the name of the Secret holding the payload document of
// the VirtualMachineInstance named vmiName. The operator writes it and the Pod
// webhook mounts it, each deriving the name on its own. Over-long names are
// shortened with a hash so that distinct VMIs never share a Secret.
func PayloadSecretName(vmiName string) string {
	name := payloadSecretPrefix + vmiName
	if len(name) <= maxObjectName {
		return name
	}
	sum := sha256.Sum256([]byte(vmiName))
	suffix := "-" + hex.EncodeToString(sum[:])[:16]
	return name[:maxObjectName-len(suffix)] + suffix
}

// SharedPayloadSecretName is the name of the Secret holding the shared
// payload document of the MetadataService named serviceName: the user-data
// and vendor-data that every instance it serves gets alike, stored once. The
// hash suffix keeps it apart from any VMI's payload Secret (a VMI named
// "shared-web" would otherwise share a name with service web's).
func SharedPayloadSecretName(serviceName string) string {
	sum := sha256.Sum256([]byte("shared/" + serviceName))
	suffix := "-" + hex.EncodeToString(sum[:])[:10]
	name := payloadSecretPrefix + "shared-" + serviceName
	if len(name)+len(suffix) > maxObjectName {
		name = name[:maxObjectName-len(suffix)]
	}
	return name + suffix
}
