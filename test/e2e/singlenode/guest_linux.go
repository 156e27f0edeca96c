package singlenode

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// namespaceGuest is real cloud-init run in the guest's network namespace.
type namespaceGuest struct {
	res *guest.Result
	net podnet.NS
}

// BootNamespaceGuest boots real cloud-init of generation gen on a fresh
// overlay of its Debian tree, in l's guest network namespace, with the
// SMBIOS the VMI's spec gives the VM. The guest's files stay readable until
// Close.
func (l *Launcher) BootNamespaceGuest(ctx context.Context, root guest.Root, log io.Writer) (guestspecs.Guest, error) {
	res, err := guest.Run(ctx, guest.Config{
		Root:    root,
		NetNS:   l.Net.Guest.Name,
		SMBIOS:  SMBIOS(l.VMI),
		WorkDir: l.node.WorkDir,
		Log:     log,
	})
	if err != nil {
		return nil, err
	}
	return &namespaceGuest{res: res, net: l.Net.Guest}, nil
}

func (g *namespaceGuest) Kind() string {
	return fmt.Sprintf("real cloud-init (%s, Debian %s) in a network namespace", g.res.CloudInit, g.res.Generation)
}

func (g *namespaceGuest) Boot() guestspecs.BootFacts {
	return guestspecs.BootFacts{
		Status:        strings.TrimSpace(firstLine(g.res.Status)),
		ExitCode:      g.res.StatusCode,
		Datasource:    g.res.Datasource,
		InstanceID:    g.res.InstanceID,
		Hostname:      g.res.Hostname,
		Addresses:     g.res.IPAddr,
		Routes:        g.res.IPRoute,
		NetworkConfig: g.res.NetworkConfig,
		Duration:      g.res.Duration,
	}
}

func (g *namespaceGuest) ReadFile(_ context.Context, path string) (string, error) {
	b, err := g.res.ReadFile(path)
	return string(b), err
}

func (g *namespaceGuest) Get(ctx context.Context, url string, header ...string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	// Long polls last up to their timeout_sec; ctx bounds the request.
	resp, err := g.net.HTTPClient(10 * time.Minute).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (g *namespaceGuest) Close() error { return g.res.Close() }

// firstLine is s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
