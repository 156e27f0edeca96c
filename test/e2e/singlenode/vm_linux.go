package singlenode

import (
	"context"
	"fmt"
	"io"
	"strings"
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
	s := SMBIOS(l.VMI)
	// The VM outlives the boot's ctx: Close stops it.
	life, stop := context.WithCancel(context.Background())
	v, err := vm.Boot(life, vm.Config{
		Image: image, NetNS: l.Net.Name, Tap: "tap0", MAC: l.Net.GuestMAC,
		SMBIOS: vm.SMBIOS{
			Manufacturer: s.Manufacturer, Product: s.Product, Family: s.Family,
			Serial: s.Serial, UUID: s.UUID,
			ChassisManufacturer: s.ChassisManufacturer, ChassisVersion: s.ChassisVersion,
			ChassisSerial: s.ChassisSerial, ChassisAsset: s.ChassisAsset,
		},
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

// collect waits for cloud-init and gathers the boot facts.
func (g *vmGuest) collect(ctx context.Context) error {
	ds, err := g.vm.WaitCloudInit(ctx)
	if err != nil {
		return err
	}
	f := guestspecs.BootFacts{Datasource: ds, Duration: time.Since(g.vm.Started), NetworkConfig: map[string]string{}}
	status, code, err := g.vm.CloudInitStatus(ctx)
	if err != nil {
		return err
	}
	f.Status, f.ExitCode = strings.TrimSpace(firstLine(status)), code
	for _, q := range []struct {
		dst *string
		cmd string
	}{
		{&f.InstanceID, "cloud-init query instance_id"},
		{&f.Hostname, "hostname"},
		{&f.Addresses, "ip -4 addr show"},
		{&f.Routes, "ip -4 route show"},
	} {
		out, exit, err := g.vm.Run(ctx, q.cmd)
		if err != nil || exit != 0 {
			return fmt.Errorf("%s in the VM: exit %d: %v: %s", q.cmd, exit, err, out)
		}
		*q.dst = strings.TrimSpace(out)
	}
	out, _, err := g.vm.Run(ctx, "ls /etc/netplan/*.yaml /etc/network/interfaces.d/* 2>/dev/null")
	if err != nil {
		return err
	}
	for _, p := range strings.Fields(out) {
		if f.NetworkConfig[p], err = g.ReadFile(ctx, p); err != nil {
			return err
		}
	}
	g.facts = f
	return nil
}

func (g *vmGuest) Kind() string {
	return fmt.Sprintf("a Debian %s VM under qemu (TCG; kernel %s, %s)", g.image.Suite, g.image.KernelVersion, g.image.CloudInit)
}

func (g *vmGuest) Boot() guestspecs.BootFacts { return g.facts }

func (g *vmGuest) ReadFile(ctx context.Context, path string) (string, error) {
	out, exit, err := g.vm.Run(ctx, "cat "+shellQuote(path))
	if err == nil && exit != 0 {
		err = fmt.Errorf("cat %s in the VM: exit %d: %s", path, exit, out)
	}
	return out, err
}

// Get runs curl in the VM; its last output line is the status code.
func (g *vmGuest) Get(ctx context.Context, url string, header ...string) (int, string, error) {
	cmd := "curl -sS -w '\\n%{http_code}'"
	for _, h := range header {
		cmd += " -H " + shellQuote(h)
	}
	out, exit, err := g.vm.Run(ctx, cmd+" "+shellQuote(url))
	if err != nil {
		return 0, "", err
	}
	if exit != 0 {
		return 0, "", fmt.Errorf("curl %s in the VM: exit %d: %s", url, exit, out)
	}
	body, code, ok := cutLast(strings.TrimSuffix(out, "\n"), "\n")
	if !ok {
		body, code = "", out
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(code), "%d", &n); err != nil {
		return 0, "", fmt.Errorf("curl %s in the VM: no status code in %q", url, out)
	}
	return n, body, nil
}

func (g *vmGuest) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := g.vm.Stop(ctx)
	g.stop()
	return err
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// cutLast is strings.Cut at the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}
