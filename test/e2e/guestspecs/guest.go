package guestspecs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Guest is a booted guest, whichever kind it is: real cloud-init in a
// network namespace, a VM under qemu, or a VM in a cluster reached through
// its serial console.
type Guest interface {
	// Kind names the guest for people: "cloud-init 25.1.4 in a namespace".
	Kind() string
	// Boot summarises what cloud-init reported when it finished.
	Boot() BootFacts
	// ReadFile reads a file inside the guest.
	ReadFile(ctx context.Context, path string) (string, error)
	// Get sends a GET from inside the guest, with the given header lines
	// ("Name: value"), and returns the status code and body.
	Get(ctx context.Context, url string, header ...string) (int, string, error)
	// Close shuts the guest down and removes its files.
	Close() error
}

// BootFacts is what the guest got at boot, as its own tools report it.
type BootFacts struct {
	// Status is cloud-init's verdict ("done"); ExitCode that of `cloud-init status`.
	Status   string
	ExitCode int
	// Datasource is the datasource cloud-init settled on, e.g. DataSourceNoCloudNet.
	Datasource string
	// InstanceID and Hostname are cloud-init's instance-id and the kernel's hostname.
	InstanceID, Hostname string
	// Addresses is the guest's `ip -4 addr` of its NIC; Routes its `ip -4 route`.
	Addresses, Routes string
	// NetworkConfig is the network configuration cloud-init rendered, by path.
	NetworkConfig map[string]string
	// Duration is the boot, from power-on to cloud-init's end.
	Duration time.Duration
}

// IPv4Addresses condenses `ip addr` output to "ADDR/LEN on IFACE" for every
// IPv4 address but loopback's, marking those a DHCP lease gave ("dynamic").
func IPv4Addresses(ipAddr string) []string {
	var out []string
	iface := ""
	for _, line := range strings.Split(ipAddr, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 1 && strings.HasSuffix(f[0], ":") && !strings.HasPrefix(line, " "):
			iface, _, _ = strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		case len(f) > 1 && f[0] == "inet" && iface != "lo":
			a := f[1] + " on " + iface
			if strings.Contains(line, " dynamic") {
				a += " (DHCP)"
			}
			out = append(out, a)
		}
	}
	return out
}

// Describe formats boot facts for people, one fact per line.
func (f BootFacts) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cloud-init:    %s (exit %d) from %s in %.1fs\n", f.Status, f.ExitCode, f.Datasource, f.Duration.Seconds())
	fmt.Fprintf(&b, "instance-id:   %s\n", f.InstanceID)
	fmt.Fprintf(&b, "hostname:      %s\n", f.Hostname)
	fmt.Fprintf(&b, "addresses:     %s\n", strings.Join(IPv4Addresses(f.Addresses), ", "))
	fmt.Fprintf(&b, "routes:        %s\n", indent(strings.TrimSpace(f.Routes), "               "))
	paths := make([]string, 0, len(f.NetworkConfig))
	for p := range f.NetworkConfig {
		// What cloud-init wrote; the files netplan generates from it repeat it.
		if strings.HasPrefix(p, "/etc/") {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Fprintf(&b, "network config %s:\n%s\n", p, indent("  "+strings.TrimSpace(f.NetworkConfig[p]), "  "))
	}
	return b.String()
}

func indent(s, prefix string) string {
	return strings.ReplaceAll(s, "\n", "\n"+prefix)
}
