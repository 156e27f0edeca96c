//go:build linux

package main

import (
	"context"
	"io"

	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/singlenode"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
	"github.com/kubevirt-imds/kubevirt-imds/test/vm"
)

// plumbFor is the Pod network for the guest kind: a tap for qemu, a veth
// into a guest namespace for the namespace guest; DHCP for both.
func plumbFor(kind string) singlenode.PlumbFunc {
	if kind == "vm" {
		return singlenode.PlumbVM
	}
	return func(tb podnet.TB, p *podnet.Pod) { p.PlumbMasqueradeDHCP(tb) }
}

// guestImages holds what the guests boot from: a Debian tree for the
// namespace guest, a disk image for the VM.
type guestImages struct {
	root guest.Root
	vm   vm.Image
}

// boot boots the guest of the kind on l.
func (gi guestImages) boot(ctx context.Context, kind string, l *singlenode.Launcher, log io.Writer) (guestspecs.Guest, error) {
	if kind == "vm" {
		return l.BootVM(ctx, gi.vm, log)
	}
	return l.BootNamespaceGuest(ctx, gi.root, log)
}
