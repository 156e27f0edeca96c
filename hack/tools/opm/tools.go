//go:build tools

// Package tools pins opm (operator-registry), which makes the file-based
// catalog the local cluster's OLM installs the bundle from, and serves it in
// the catalog's image (`opm serve`) and unpacks bundles in OLM's unpack jobs
// (`opm alpha bundle extract`). It is built from the Go module proxy with the
// build tag containers_image_openpgp (no gpgme, so CGO_ENABLED=0 works), in a
// module of its own so that its dependencies never move the main module's.
package tools

import _ "github.com/operator-framework/operator-registry/cmd/opm"
