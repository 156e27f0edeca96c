// Package sidecar runs the metadata service inside a virt-launcher Pod: it
// plumbs 169.254.169.254 onto KubeVirt's in-pod bridge, answers ARP for it and
// serves the payload document in the enabled dialects. It never talks to the
// Kubernetes API.
//
// Run wires the parts: the payload store (sidecar/store), the network plan
// (sidecar/network) applied by the Plumber, or watched for in mode "node",
// once the bridge and the VM's tap exist, the ARP responder (sidecar/arp)
// on the VM's port, the guest-facing server (sidecar/server) on
// 169.254.169.254 only, and an admin endpoint with /healthz, /readyz and
// /metrics on a loopback address the guest cannot reach. veth-imds is left
// in place on exit: a restarted sidecar adopts it, so the guest's neighbour
// entry stays valid.
package sidecar

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/jsonlog"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// NetAdminBinary is the image's sidecar binary that links the plumbing of
// network-setup mode "sidecar" (a Plumber), beside the per-VM binary of mode
// "node", which runs it in its place for that mode.
const NetAdminBinary = "kubevirt-imds-sidecar-netadmin"

// Network set-up modes (Options.NetworkSetup).
const (
	// NetworkSetupSidecar: the sidecar plumbs its own Pod's namespace.
	NetworkSetupSidecar = "sidecar"
	// NetworkSetupNode: the node agent plumbs it; the sidecar is unprivileged.
	NetworkSetupNode = "node"
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
	// NetworkSetup says who plumbs the Pod's network namespace:
	// NetworkSetupSidecar (this process, with CAP_NET_ADMIN and CAP_NET_RAW)
	// or NetworkSetupNode (the node agent; this process needs no capability
	// and only waits for 169.254.169.254 to appear on veth-imds).
	NetworkSetup string
	// MACSeed overrides the payload's instance UID as veth-imds's MAC seed;
	// the webhook sets it in mode "node", where the node agent, which cannot
	// read the payload, derives the MAC from the same flag.
	MACSeed string
	// Instance is the VMI as namespace/name, which the webhook renders so
	// that the node agent, which cannot read the payload, labels this
	// sidecar's metrics with it. The sidecar itself only logs it.
	Instance string
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
	// RateLimit is a guest connection's sustained request rate
	// (requests/s); 0 takes the server's default.
	RateLimit float64
	// Burst is a guest connection's request burst; 0 takes the server's
	// default.
	Burst int
	// MaxConns caps the guest's open connections; 0 takes the server's
	// default.
	MaxConns int
	// MaxLongPolls caps the guest's waiting long polls; 0 takes the
	// server's default.
	MaxLongPolls int
	// Hosts are names the guest may send as Host besides 169.254.169.254.
	Hosts []string
}

// AddFlags binds o's fields to flags in fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.PayloadDir, "payload-dir", "/var/run/kubevirt-imds/payload", "directory of the mounted payload Secret")
	fs.StringVar(&o.TokenDir, "token-dir", "/var/run/kubevirt-imds/tokens", "directory holding the projected ServiceAccount token volumes")
	fs.StringVar(&o.Bridge, "bridge", "", "in-pod bridge to serve on (default: the payload's serve.bridge, else k6t-eth0)")
	fs.StringVar(&o.NetworkSetup, "network-setup", NetworkSetupSidecar, "who plumbs the Pod's network: sidecar (this process, needs NET_ADMIN and NET_RAW) or node (the kubevirt-imds node agent; no capabilities needed)")
	fs.StringVar(&o.MACSeed, "mac-seed", "", "seed of veth-imds's MAC address (default: the payload's instance UID)")
	fs.StringVar(&o.Instance, "instance", "", "the VMI as namespace/name (the node agent labels this sidecar's metrics with it)")
	fs.StringVar(&o.GuestPort, "guest-port", "", "the VM's port on the bridge (default: derived from the bridge name, tap0 for k6t-eth0)")
	fs.IntVar(&o.ListenPort, "listen-port", 80, "guest-facing TCP port on 169.254.169.254")
	// Not 127.0.0.1, which KubeVirt's masquerade binding redirects into the guest.
	fs.StringVar(&o.AdminAddress, "admin-address", "127.0.0.2:8081", "loopback address for /healthz, /readyz and /metrics (not 127.0.0.1: KubeVirt's masquerade binding redirects it to the guest)")
	fs.DurationVar(&o.NetworkTimeout, "network-timeout", 5*time.Minute, "how long to wait for the payload, the bridge and the VM's port before failing")
	fs.Float64Var(&o.RateLimit, "rate-limit", 0, "guest requests per second, per connection (0: the server's default)")
	fs.IntVar(&o.Burst, "burst", 0, "guest request burst, per connection (0: the server's default)")
	fs.IntVar(&o.MaxConns, "max-connections", 0, "guest connections open at once (0: the server's default)")
	fs.IntVar(&o.MaxLongPolls, "max-long-polls", 0, "guest long polls waiting at once (0: the server's default)")
	fs.Func("allowed-hosts", "comma-separated names the guest may send as Host besides 169.254.169.254 (e.g. instance-data)", func(v string) error {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				o.Hosts = append(o.Hosts, h)
			}
		}
		return nil
	})
}

// validate checks what flags cannot.
func (o *Options) validate() error {
	if o.ListenPort <= 0 || o.ListenPort > 65535 {
		return fmt.Errorf("--listen-port %d: out of range", o.ListenPort)
	}
	if o.NetworkSetup != NetworkSetupSidecar && o.NetworkSetup != NetworkSetupNode {
		return fmt.Errorf("--network-setup %q: must be %q or %q", o.NetworkSetup, NetworkSetupSidecar, NetworkSetupNode)
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

// Plumber runs network-setup mode "sidecar": it keeps in applied to this
// process's network namespace and answers ARP on the guest's port until ctx
// ends, reporting every reconciliation to onStatus and every ARP packet's
// outcome to arpPacket. Only the binary that links the plumbing
// (kubevirt-imds-sidecar-netadmin) has one: the per-VM binary of mode
// "node" carries none of its code (links, addresses and nftables rules
// written, ARP answered on a packet socket), which keeps it smaller.
type Plumber func(in network.Inputs, log logr.Logger, onStatus func(network.Status), arpPacket func(reason string)) interface {
	Run(ctx context.Context) error
}

// ParseServe parses the flags of `serve` (args without the subcommand),
// which both sidecar binaries take: the Options and the log level.
func ParseServe(args []string) (o Options, logLevel string, err error) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	o.AddFlags(fs)
	fs.StringVar(&logLevel, "log-level", "info", jsonlog.LevelHelp)
	err = fs.Parse(args)
	return o, logLevel, err
}

// Serve runs `serve`: Run with o and a JSON logger at logLevel, until
// SIGINT or SIGTERM.
func Serve(o Options, logLevel string, plumb Plumber) error {
	log, err := jsonlog.New(logLevel)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return Run(ctx, o, plumb, log)
}

// Run serves until ctx is cancelled, then shuts down gracefully and returns
// nil. It returns an error when the network never became ready within
// NetworkTimeout or a component failed. plumb is needed in mode "sidecar"
// only; nil serves mode "node" alone.
func Run(ctx context.Context, o Options, plumb Plumber, log logr.Logger) error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.NetworkSetup == NetworkSetupSidecar && plumb == nil {
		return fmt.Errorf("--network-setup %q: this binary serves mode %q only; %s plumbs the Pod itself", o.NetworkSetup, NetworkSetupNode, NetAdminBinary)
	}
	return run(ctx, o, plumb, log)
}
