//go:build e2e

package kind

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
)

// ConsoleGuest is a VM with cloud-init reached through its serial console
// as a user with sudo, as guestspecs expects of a guest.
type ConsoleGuest struct {
	Console *Console
	// Name describes the guest for people.
	Name  string
	facts guestspecs.BootFacts
}

// WaitCloudInit waits until cloud-init has finished in the guest and
// collects what it got.
func (g *ConsoleGuest) WaitCloudInit(ctx context.Context, booted time.Time) error {
	status, code, err := g.Console.Run(ctx, "sudo cloud-init status --wait --long")
	if err != nil {
		return err
	}
	f := guestspecs.BootFacts{ExitCode: code, Duration: time.Since(booted), NetworkConfig: map[string]string{}}
	for _, line := range strings.Split(status, "\n") {
		switch {
		case strings.HasPrefix(line, "status:"):
			f.Status = strings.TrimSpace(line)
		case strings.HasPrefix(line, "detail:"):
			// "detail: DataSourceNoCloudNet [seed=…]" (the value may be on the next line).
			f.Datasource = strings.TrimSpace(strings.TrimPrefix(line, "detail:"))
		case strings.HasPrefix(line, "DataSource") && f.Datasource == "":
			f.Datasource = strings.TrimSpace(line)
		}
	}
	for _, q := range []struct {
		dst *string
		cmd string
	}{
		{&f.InstanceID, "cloud-init query instance_id"},
		{&f.Hostname, "hostname"},
		{&f.Addresses, "ip -4 addr show"},
		{&f.Routes, "ip -4 route show"},
	} {
		out, exit, err := g.Console.Run(ctx, q.cmd)
		if err != nil || exit != 0 {
			return fmt.Errorf("%s in %s: exit %d: %v: %s", q.cmd, g.Name, exit, err, out)
		}
		*q.dst = strings.TrimSpace(out)
	}
	out, _, err := g.Console.Run(ctx, "ls /etc/netplan/*.yaml 2>/dev/null")
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

// Kind describes the guest.
func (g *ConsoleGuest) Kind() string { return g.Name }

// Boot is what WaitCloudInit collected.
func (g *ConsoleGuest) Boot() guestspecs.BootFacts { return g.facts }

// ReadFile reads a file as root.
func (g *ConsoleGuest) ReadFile(ctx context.Context, path string) (string, error) {
	out, exit, err := g.Console.Run(ctx, "sudo cat "+shellQuote(path))
	if err == nil && exit != 0 {
		err = fmt.Errorf("cat %s in %s: exit %d: %s", path, g.Name, exit, out)
	}
	return out, err
}

// Get runs curl in the guest; its last output line is the status code.
func (g *ConsoleGuest) Get(ctx context.Context, url string, header ...string) (int, string, error) {
	return CurlGet(ctx, g.Console, url, header...)
}

// Close ends the console session; the VM keeps running.
func (g *ConsoleGuest) Close() error { return g.Console.Close() }

// CurlGet runs curl on c's shell.
func CurlGet(ctx context.Context, c *Console, url string, header ...string) (int, string, error) {
	cmd := "curl -sS -w '\\n%{http_code}'"
	for _, h := range header {
		cmd += " -H " + shellQuote(h)
	}
	out, exit, err := c.Run(ctx, cmd+" "+shellQuote(url))
	if err != nil {
		return 0, "", err
	}
	if exit != 0 {
		return 0, "", fmt.Errorf("curl %s: exit %d: %s", url, exit, out)
	}
	out = strings.TrimSuffix(out, "\n")
	i := strings.LastIndex(out, "\n")
	var code int
	if _, err := fmt.Sscanf(out[i+1:], "%d", &code); err != nil {
		return 0, "", fmt.Errorf("curl %s: no status code in %q", url, out)
	}
	if i < 0 {
		return code, "", nil
	}
	return code, out[:i], nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
