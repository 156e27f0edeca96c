package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// nodeSetupWatcher reports, in network-setup mode "node", whether the node
// agent has put 169.254.169.254 on veth-imds and attached it to the bridge.
// It only reads netlink and subscribes to its link and address events, which
// need no capability.
type nodeSetupWatcher struct {
	Inputs   network.Inputs
	OnStatus func(network.Status)
}

// Run reports a status on start and after every link or address change,
// until ctx ends.
func (w *nodeSetupWatcher) Run(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	subErr := make(chan error, 2)
	onErr := func(err error) {
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			return
		}
		select {
		case subErr <- err:
		default:
		}
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribing to link events: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribing to address events: %w", err)
	}
	for {
		w.OnStatus(w.observe())
		select {
		case <-ctx.Done():
			return nil
		case err := <-subErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("netlink subscription: %w", err)
		case _, ok := <-links:
			if !ok {
				return subscriptionClosed(ctx)
			}
		case _, ok := <-addrs:
			if !ok {
				return subscriptionClosed(ctx)
			}
		}
	}
}

func subscriptionClosed(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil //nolint:nilerr // cancelled: the caller is stopping, not failing
	}
	return errors.New("netlink subscription closed")
}

// observe is one look at the namespace.
func (w *nodeSetupWatcher) observe() network.Status {
	all, err := netlink.LinkList()
	if err != nil {
		return network.Status{Err: fmt.Errorf("listing links: %w", err)}
	}
	var obs []network.Link
	for _, l := range all {
		a := l.Attrs()
		ol := network.Link{Name: a.Name, Index: a.Index, Kind: l.Type(), MasterIndex: a.MasterIndex, MAC: a.HardwareAddr, Up: a.Flags&unix.IFF_UP != 0}
		if a.Name == network.LinkName {
			addrs, err := netlink.AddrList(l, unix.AF_INET)
			if err != nil {
				return network.Status{Err: fmt.Errorf("listing the addresses of %s: %w", network.LinkName, err)}
			}
			for _, ad := range addrs {
				if p, ok := netip.AddrFromSlice(ad.IP.To4()); ok {
					ones, _ := ad.Mask.Size()
					ol.Addrs = append(ol.Addrs, netip.PrefixFrom(p, ones))
				}
			}
		}
		obs = append(obs, ol)
	}
	return network.AttachedStatus(obs, w.Inputs)
}
