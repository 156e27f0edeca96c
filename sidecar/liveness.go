package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
)

// The sidecar's own liveness check, as the exec probe it replaces ran it:
// every 10 s, 3 s to answer, 3 failures in a row.
const (
	livenessInterval = 10 * time.Second
	livenessTimeout  = 3 * time.Second
	livenessFailures = 3
)

// watchLiveness runs check every interval and returns an error once it has
// failed failures times in a row; the sidecar then exits and the kubelet
// restarts it (a native sidecar always restarts), as a failing liveness
// probe would have it. The Pod carries no liveness probe: the kubelet's
// httpGet and tcpSocket probes dial the Pod IP, which KubeVirt hands to the
// guest, and an exec probe forks a process in the Pod every ten seconds.
// The check runs on its own goroutine, so a wedged server does not stop it.
func watchLiveness(ctx context.Context, check func(context.Context) error, interval, timeout time.Duration, failures int, log logr.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	failed := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := check(cctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			failed = 0
			continue
		}
		failed++
		log.Info("liveness check failed", "failures", failed, "of", failures, "error", err.Error())
		if failed >= failures {
			return fmt.Errorf("not live: %d liveness checks in a row failed, the last with: %w", failed, err)
		}
	}
}

// healthzCheck GETs /healthz from the admin endpoint at addr (host:port)
// and wants 200. It speaks one HTTP/1.0 exchange on a connection of its own
// instead of using an http.Client: the client and its Transport would be the
// largest part of the per-VM binary that nothing else in it needs. Its
// reader is reused (checks run one at a time): a new one every ten seconds
// was most of an idle sidecar's garbage.
func healthzCheck(addr string) func(context.Context) error {
	br := bufio.NewReaderSize(nil, 512)
	return func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		if deadline, ok := ctx.Deadline(); ok {
			if err := conn.SetDeadline(deadline); err != nil {
				return err
			}
		}
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			return err
		}
		br.Reset(conn)
		defer br.Reset(nil) // holds no closed connection between checks
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET http://%s/healthz: %s", addr, resp.Status)
		}
		return nil
	}
}
