//go:build !linux

package main

// releaseStartupPages is Linux-only; elsewhere there is nothing to release.
func releaseStartupPages() error { return nil }
