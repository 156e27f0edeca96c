//go:build linux

package main

import (
	"context"
	"errors"
	"io"

	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/singlenode"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

func ensureVMImage(ctx context.Context, progress io.Writer) (any, error) {
	return nil, errors.New("not yet")
}

func bootVM(ctx context.Context, l *singlenode.Launcher, image any, dir string, log io.Writer) (guestspecs.Guest, error) {
	return nil, errors.New("not yet")
}

func plumbFor(kind string) singlenode.PlumbFunc {
	return func(tb podnet.TB, p *podnet.Pod) { p.PlumbMasqueradeDHCP(tb) }
}
