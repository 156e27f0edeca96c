package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"time"
)

// runProbe GETs one URL and fails unless it answers 200. The sidecar's admin
// endpoint listens on loopback inside the Pod, out of the reach of kubelet's
// httpGet probes (they dial the Pod IP), so the Pod probes it with
// `kubevirt-imds-sidecar probe` as an exec probe. Only loopback URLs are accepted:
// the probe must never become a way to reach other hosts.
func runProbe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: kubevirt-imds-sidecar probe [--timeout d] http://127.0.0.2:<port>/<path>")
	}
	return probe(fs.Arg(0), *timeout)
}

func probe(rawURL string, timeout time.Duration) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	addr, perr := netip.ParseAddr(u.Hostname())
	if u.Scheme != "http" || perr != nil || !addr.IsLoopback() {
		return fmt.Errorf("%s: only http:// loopback URLs are probed", rawURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", rawURL, resp.Status, body)
	}
	return nil
}
