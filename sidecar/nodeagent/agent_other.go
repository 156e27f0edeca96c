//go:build !linux

package nodeagent

import (
	"context"
	"errors"
)

type nsID struct{}

type worker struct{}

// Run fails: the agent enters Linux network namespaces.
func (a *Agent) Run(context.Context) error {
	return errors.New("node-agent: needs Linux (network namespaces, netlink, packet sockets)")
}
