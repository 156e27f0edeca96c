//go:build tools

// Package tools pins Helm, with which the local cluster renders OLM's chart
// (deploy/chart in OLM's module) as OLM's own release script does: `helm
// template` with the release's values, the images replaced by the ones built
// here. It is built from the Go module proxy, in a module of its own so that
// Helm's dependencies never move the main module's.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
