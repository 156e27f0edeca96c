// Package sidecar runs the metadata service inside a virt-launcher Pod: it
// plumbs 169.254.169.254 onto KubeVirt's in-pod bridge, answers ARP for it and
// serves the payload document in the enabled dialects. It never talks to the
// Kubernetes API.
//
// Run wires the parts: the payload store (sidecar/store), the network plan
// (sidecar/network) applied once the bridge and the VM's tap exist, the ARP
// responder (sidecar/arp) on the VM's port, the guest-facing server
// (sidecar/server) on 169.254.169.254 only, and an admin endpoint with
// /healthz, /readyz and /metrics on a loopback address the guest cannot
// reach. veth-imds is left in place on exit: a restarted sidecar adopts it,
// so the guest's neighbour entry stays valid.
package sidecar

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
)

// Options configure the sidecar. Every field has a flag.
type Options struct {
	// PayloadDir is the mounted payload Secret.
	PayloadDir string
	// TokenDir holds one directory per projected ServiceAccount token volume.
	TokenDir string

	// Bridge is the in-pod bridge to serve on; empty takes the payload's
	// Serve.Bridge, else the primary interface's bridge (k6t-eth0).
	Bridge string
	// GuestPort is the VM's port on Bridge; empty derives it (tap0 on
	// k6t-eth0, tap<hash> on k6t-<hash>).
	GuestPort string
	// ListenPort is the guest-facing TCP port on 169.254.169.254.
	ListenPort int
	// AdminAddress serves /healthz, /readyz and /metrics; it must be a
	// loopback address, which the guest cannot reach.
	AdminAddress string
	// NetworkTimeout bounds the wait for the payload, the bridge and the
	// VM's port; Run fails after it.
	NetworkTimeout time.Duration
	// RateLimit is the guest's sustained request rate (requests/s); 0 takes
	// the server's default.
	RateLimit float64
	// Burst is the guest's request burst; 0 takes the server's default.
	Burst int

	// OnServing, if set, runs once when the sidecar first serves the guest:
	// start-up is over. Not a flag.
	OnServing func()
}

// AddFlags binds o's fields to flags in fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.PayloadDir, "payload-dir", "/var/run/kubevirt-imds/payload", "directory of the mounted payload Secret")
	fs.StringVar(&o.TokenDir, "token-dir", "/var/run/kubevirt-imds/tokens", "directory holding the projected ServiceAccount token volumes")
	fs.StringVar(&o.Bridge, "bridge", "", "in-pod bridge to serve on (default: the payload's serve.bridge, else k6t-eth0)")
	fs.StringVar(&o.GuestPort, "guest-port", "", "the VM's port on the bridge (default: derived from the bridge name, tap0 for k6t-eth0)")
	fs.IntVar(&o.ListenPort, "listen-port", 80, "guest-facing TCP port on 169.254.169.254")
	fs.StringVar(&o.AdminAddress, "admin-address", "127.0.0.1:8081", "loopback address for /healthz, /readyz and /metrics")
	fs.DurationVar(&o.NetworkTimeout, "network-timeout", 5*time.Minute, "how long to wait for the payload, the bridge and the VM's port before failing")
	fs.Float64Var(&o.RateLimit, "rate-limit", 0, "guest requests per second (0: the server's default)")
	fs.IntVar(&o.Burst, "burst", 0, "guest request burst (0: the server's default)")
}

// validate checks what flags cannot.
func (o *Options) validate() error {
	if o.ListenPort <= 0 || o.ListenPort > 65535 {
		return fmt.Errorf("--listen-port %d: out of range", o.ListenPort)
	}
	if o.NetworkTimeout <= 0 {
		return fmt.Errorf("--network-timeout %s: must be positive", o.NetworkTimeout)
	}
	host, _, err := net.SplitHostPort(o.AdminAddress)
	if err != nil {
		return fmt.Errorf("--admin-address %q: %w", o.AdminAddress, err)
	}
	if host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return fmt.Errorf("--admin-address %q: must be a loopback address, out of the guest's reach", o.AdminAddress)
		}
	}
	if o.PayloadDir == "" {
		return errors.New("--payload-dir is required")
	}
	return nil
}

// Run serves until ctx is cancelled, then shuts down gracefully and returns
// nil. It returns an error when the network never became ready within
// NetworkTimeout or a component failed.
func Run(ctx context.Context, o Options, log logr.Logger) error {
	if err := o.validate(); err != nil {
		return err
	}
	return run(ctx, o, log)
}
