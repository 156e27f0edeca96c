//go:build !linux

package sidecar

import (
	"context"
	"errors"

	"github.com/go-logr/logr"
)

func run(context.Context, Options, Plumber, logr.Logger) error {
	return errors.New("sidecar: needs Linux (network namespaces, netlink, packet sockets)")
}
