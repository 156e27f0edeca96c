// Package payload defines the payload document: the whole contract between the
// kubevirt-imds operator, which renders one document per selected
// VirtualMachineInstance into a Secret, and the sidecar, which serves it to the
// guest in several metadata dialects.
//
// The document is JSON, stored under the key SecretKey of the payload Secret
// and mounted into the sidecar as a file of that name. Its apiVersion is
// APIVersion; fields are only ever added within a version, so an older sidecar
// ignores what it does not know and a newer one treats a missing field as its
// zero value. The document's hash covers its bytes as stored, not a
// re-encoding, so it holds for fields the reader does not know: during an
// upgrade a sidecar serves what an operator one version newer or older wrote. A change that would alter the meaning of an existing field gets a
// new apiVersion (and a new package).
//
// This package depends on the standard library only: the sidecar links it
// without any Kubernetes client code.
package payload
