//go:build e2e

package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
)

// ConsoleGuest is a VM with cloud-init reached through its serial console
// as a user with sudo, as guestspecs expects of a guest.
type ConsoleGuest struct {
	Console *Console
	// Name describes the guest for people.
	Name string
	// Sudo prefixes commands that need root: "sudo " for a user's login
	// shell, empty for a root shell.
	Sudo  string
	facts guestspecs.BootFacts
}

// WaitCloudInit waits until cloud-init has finished in the guest and
// collects what it got.
func (g *ConsoleGuest) WaitCloudInit(ctx context.Context, booted time.Time) error {
	f, err := guestspecs.CollectBootFacts(ctx, g.Console, g.Sudo, booted)
	g.facts = f
	return err
}

// Kind describes the guest.
func (g *ConsoleGuest) Kind() string { return g.Name }

// Boot is what WaitCloudInit collected.
func (g *ConsoleGuest) Boot() guestspecs.BootFacts { return g.facts }

// ReadFile reads a file as root.
func (g *ConsoleGuest) ReadFile(ctx context.Context, path string) (string, error) {
	out, exit, err := g.Console.Run(ctx, g.Sudo+"cat "+guestspecs.ShellQuote(path))
	if err == nil && exit != 0 {
		err = fmt.Errorf("cat %s in %s: exit %d: %s", path, g.Name, exit, out)
	}
	return out, err
}

// Get runs curl in the guest.
func (g *ConsoleGuest) Get(ctx context.Context, url string, header ...string) (int, string, error) {
	return guestspecs.CurlGet(ctx, g.Console, url, header...)
}

// Close ends the console session; the VM keeps running.
func (g *ConsoleGuest) Close() error { return g.Console.Close() }
