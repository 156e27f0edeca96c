//go:build tools

// Package tools pins the kubebuilder CLI, which the PROJECT test runs on a
// copy of the tree to prove that PROJECT describes it; it is built from the
// Go module proxy, in a module of its own so that kubebuilder's dependencies
// never move the main module's.
package tools

import _ "sigs.k8s.io/kubebuilder/v4"
