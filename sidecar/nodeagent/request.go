// Package nodeagent is the node side of network-setup mode "node": one
// privileged agent per node (a DaemonSet) plumbs 169.254.169.254 into the
// network namespace of every unprivileged metadata sidecar on its node, as
// KubeVirt's virt-handler plumbs the VM's own network, so the sidecar
// container itself needs no capability and the launcher Pod passes the
// baseline and restricted Pod Security levels.
//
// The agent reads and writes no Kubernetes object (it asks the API server
// only whether a scrape of its metrics is allowed). It finds the sidecars by
// scanning /proc for processes whose command line is
// `…/kubevirt-imds-sidecar serve … --network-setup=node …`, reads what to build from that command line (the
// flags the webhook rendered), enters the process's network namespace on a
// locked OS thread and runs sidecar/plumbing there until the process is gone.
// A process that merely pretends to be a sidecar gets, in its own network
// namespace, what a real one gets: a veth holding 169.254.169.254 on a bridge
// of that namespace and an ARP responder; the agent never acts on the node's
// own namespace.
package nodeagent

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// ServicePort is the TCP port guests connect to; in mode "node" the sidecar
// listens elsewhere (Request.ListenPort), as it may not bind ports below
// 1024, and the agent's guard redirects.
const ServicePort = network.DefaultServicePort

// DefaultAdminAddress is the sidecar's default --admin-address.
const DefaultAdminAddress = "127.0.0.2:8081"

// Request is what a node-mode sidecar's command line asks of the agent.
type Request struct {
	Bridge     string
	GuestPort  string
	MACSeed    string
	ListenPort int
	// AdminAddress is the sidecar's loopback admin endpoint, which the
	// agent scrapes inside the sidecar's network namespace.
	AdminAddress string
	// Instance is the VMI as namespace/name, for metric labels; it may be
	// empty (a sidecar rendered by an older webhook).
	Instance string
}

// InstanceNamespaceName splits Instance.
func (r Request) InstanceNamespaceName() (namespace, name string) {
	namespace, name, _ = strings.Cut(r.Instance, "/")
	return namespace, name
}

// Inputs is the network plan's input for r.
func (r Request) Inputs() network.Inputs {
	return network.Inputs{Bridge: r.Bridge, GuestPort: r.GuestPort, MACSeed: r.MACSeed, ServicePort: ServicePort, ListenPort: r.ListenPort}
}

// errNotNodeMode marks a command line that is not a node-mode sidecar's.
var errNotNodeMode = errors.New("not a node-mode sidecar")

// SidecarProgram is the sidecar binary's name, the last element of argv[0]
// as the webhook renders the container's command.
const SidecarProgram = "kubevirt-imds-sidecar"

// ParseCommandLine reads a process's argv. It returns errNotNodeMode unless
// argv runs SidecarProgram's `serve` with --network-setup=node, and an error
// naming the flag when one the agent needs is malformed. Flags it does not
// need are skipped, so a sidecar one version newer, with flags this agent
// does not know, is still served.
func ParseCommandLine(argv []string) (Request, error) {
	if len(argv) < 2 || path.Base(argv[0]) != SidecarProgram || argv[1] != "serve" {
		return Request{}, errNotNodeMode
	}
	flags := map[string]string{}
	for i := 2; i < len(argv); i++ {
		arg := argv[i]
		if arg == "--" {
			break
		}
		if !strings.HasPrefix(arg, "-") {
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !hasValue && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") {
			// "--flag value": every flag the sidecar has takes a value but
			// the booleans, which are not written this way.
			i++
			value = argv[i]
		}
		flags[name] = value
	}
	if flags["network-setup"] != "node" {
		return Request{}, errNotNodeMode
	}
	r := Request{Bridge: flags["bridge"], GuestPort: flags["guest-port"], MACSeed: flags["mac-seed"], ListenPort: ServicePort,
		AdminAddress: DefaultAdminAddress, Instance: flags["instance"]}
	if r.Bridge == "" {
		r.Bridge = network.PrimaryBridge
	}
	if !strings.HasPrefix(r.Bridge, network.BridgePrefix) {
		// Only KubeVirt's bridges: never attach to anything else a Pod made.
		return Request{}, fmt.Errorf("--bridge %q: not a KubeVirt bridge (%s*)", r.Bridge, network.BridgePrefix)
	}
	if r.MACSeed == "" {
		return Request{}, errors.New("--mac-seed is empty: the agent cannot derive veth-imds's address")
	}
	if v, ok := flags["listen-port"]; ok {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			return Request{}, fmt.Errorf("--listen-port %q: not a port", v)
		}
		r.ListenPort = p
	}
	if v, ok := flags["admin-address"]; ok {
		// Only loopback: the agent dials it inside the process's namespace,
		// and a process that merely claims to be a sidecar must not point
		// the agent anywhere else.
		ap, err := netip.ParseAddrPort(v)
		if err != nil || !ap.Addr().IsLoopback() {
			return Request{}, fmt.Errorf("--admin-address %q: not a loopback address and port", v)
		}
		r.AdminAddress = v
	}
	return r, nil
}
