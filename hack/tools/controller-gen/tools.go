//go:build tools

// Package tools pins controller-gen beside the module's own versions of the
// Kubernetes libraries, so that the Go build cache compiles them once for
// controller-gen, kube-apiserver and the module (`go install …@version`
// would build it with controller-tools' own versions).
package tools

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
