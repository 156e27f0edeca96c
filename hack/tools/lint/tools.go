//go:build tools

// Package tools pins golangci-lint so that `make lint` builds it from the
// Go module proxy (no release archive can be downloaded in this project's
// CI).
package tools

import _ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
