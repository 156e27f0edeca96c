//go:build !linux

package main

// releaseExecutablePages is Linux-only; elsewhere there is nothing to release.
func releaseExecutablePages() error { return nil }
