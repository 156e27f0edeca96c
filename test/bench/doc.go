// Package bench holds the load benchmark of the sidecar in a
// virt-launcher-shaped network namespace (`make bench`).
package bench
