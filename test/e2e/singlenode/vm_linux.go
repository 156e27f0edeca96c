package singlenode

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
	"github.com/kubevirt-imds/kubevirt-imds/test/vm"
)

// PlumbVM builds KubeVirt's masquerade topology for a qemu VM: a real tap0
// on k6t-eth0 and the in-Pod DHCP server answering the VM's MAC.
func PlumbVM(tb podnet.TB, p *podnet.Pod) {
	tb.Helper()
	p.PlumbTap(tb, podnet.Masquerade)
	p.ServeDHCP(tb)
}

// vmGuest is a VM under qemu, reached through its serial console.
type vmGuest struct {
	vm    *vm.VM
	stop  context.CancelFunc
	image vm.Image
	facts guestspecs.BootFacts
}

// BootVM boots a VM from image on l's tap (see PlumbVM) with the SMBIOS the
// VMI's spec gives it, waits until cloud-init has finished and collects what
// it got through the console. The VM runs until Close.
func (l *Launcher) BootVM(ctx context.Context, image vm.Image, log io.Writer) (guestspecs.Guest, error) {
	// The VM outlives the boot's ctx: Close stops it.
	life, stop := context.WithCancel(context.Background())
	v, err := vm.Boot(life, vm.Config{
		Image: image, NetNS: l.Net.Name, Tap: "tap0", MAC: l.Net.GuestMAC,
		SMBIOS:  SMBIOS(l.VMI),
		WorkDir: l.node.WorkDir,
		Log:     log,
	})
	if err != nil {
		stop()
		return nil, err
	}
	g := &vmGuest{vm: v, stop: stop, image: image}
	if err := g.collect(ctx); err != nil {
		_ = g.Close()
		return nil, fmt.Errorf("%w (console: %s)", err, v.ConsoleLog)
	}
	return g, nil
}

// collect waits for cloud-init, failing fast when it finds no datasource
// or qemu exits, and gathers the boot facts through the console.
func (g *vmGuest) collect(ctx context.Context) error {
	if _, err := g.vm.WaitCloudInit(ctx); err != nil {
		return err
	}
	f, err := guestspecs.CollectBootFacts(ctx, g.vm, "", g.vm.Started)
	g.facts = f
	return err
}

func (g *vmGuest) Kind() string {
	return fmt.Sprintf("a Debian %s VM under qemu (TCG; kernel %s, %s)", g.image.Suite, g.image.KernelVersion, g.image.CloudInit)
}

func (g *vmGuest) Boot() guestspecs.BootFacts { return g.facts }

func (g *vmGuest) ReadFile(ctx context.Context, path string) (string, error) {
	out, exit, err := g.vm.Run(ctx, "cat "+guestspecs.ShellQuote(path))
	if err == nil && exit != 0 {
		err = fmt.Errorf("cat %s in the VM: exit %d: %s", path, exit, out)
	}
	return out, err
}

// Get runs curl in the VM.
func (g *vmGuest) Get(ctx context.Context, url string, header ...string) (int, string, error) {
	return guestspecs.CurlGet(ctx, g.vm, url, header...)
}

func (g *vmGuest) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := g.vm.Stop(ctx)
	g.stop()
	return err
}
