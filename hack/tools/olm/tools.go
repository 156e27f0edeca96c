//go:build tools

// Package tools pins Operator Lifecycle Manager v0.38.0 for the local
// cluster's OLM install: the olm and catalog operators, the package server,
// copy-content and cpb (the utilities OLM's catalog Pods and bundle unpack
// jobs copy in), and grpc_health_probe, which OLM's catalog Pods are probed
// with. They are built from the Go module proxy, as quay.io's OLM image builds
// them, in a module of its own so that OLM's dependencies never move the main
// module's.
package tools

import (
	_ "github.com/grpc-ecosystem/grpc-health-probe"
	_ "github.com/operator-framework/operator-lifecycle-manager/cmd/catalog"
	_ "github.com/operator-framework/operator-lifecycle-manager/cmd/copy-content"
	_ "github.com/operator-framework/operator-lifecycle-manager/cmd/olm"
	_ "github.com/operator-framework/operator-lifecycle-manager/cmd/package-server"
	_ "github.com/operator-framework/operator-lifecycle-manager/util/cpb"
)
