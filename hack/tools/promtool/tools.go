//go:build tools

// Package tools pins promtool, which the rules test (config/prometheus) runs
// as `promtool test rules`: it is built from the Go module proxy (no release
// archive can be downloaded in this project's CI), in a module of its own so
// that Prometheus' dependencies never move the main module's.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
