package guestspecs

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Shell runs a command in a guest, as its console's logged-in user.
type Shell interface {
	Run(ctx context.Context, command string) (output string, exit int, err error)
}

// CollectBootFacts waits until cloud-init has finished in the guest behind
// sh and asks the guest's own tools what it got. sudo prefixes the commands
// that need root ("sudo " for a cloud image's default user, "" for root).
// booted is when the guest was powered on.
func CollectBootFacts(ctx context.Context, sh Shell, sudo string, booted time.Time) (BootFacts, error) {
	status, code, err := sh.Run(ctx, sudo+"cloud-init status --wait --long")
	if err != nil {
		return BootFacts{}, err
	}
	f := BootFacts{ExitCode: code, Duration: time.Since(booted), NetworkConfig: map[string]string{}}
	f.Status, f.Datasource = parseStatus(status)
	for _, q := range []struct {
		dst *string
		cmd string
	}{
		{&f.InstanceID, "cloud-init query instance_id"},
		{&f.Hostname, "hostname"},
		{&f.Addresses, "ip -4 addr show"},
		{&f.Routes, "ip -4 route show"},
	} {
		out, exit, err := sh.Run(ctx, q.cmd)
		if err != nil {
			return BootFacts{}, fmt.Errorf("%s: %w", q.cmd, err)
		}
		if exit != 0 {
			return BootFacts{}, fmt.Errorf("%s: exit %d: %s", q.cmd, exit, out)
		}
		*q.dst = strings.TrimSpace(out)
	}
	out, _, err := sh.Run(ctx, "ls /etc/netplan/*.yaml /etc/network/interfaces.d/* 2>/dev/null")
	if err != nil {
		return BootFacts{}, err
	}
	for _, p := range strings.Fields(out) {
		content, exit, err := sh.Run(ctx, sudo+"cat "+ShellQuote(p))
		if err != nil {
			return BootFacts{}, fmt.Errorf("cat %s: %w", p, err)
		}
		if exit != 0 {
			return BootFacts{}, fmt.Errorf("cat %s: exit %d: %s", p, exit, content)
		}
		f.NetworkConfig[p] = content
	}
	return f, nil
}

// parseStatus reads `cloud-init status --long`: its status line, and the
// datasource from the detail, which older releases put on the next line.
func parseStatus(out string) (status, datasource string) {
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		switch {
		case strings.HasPrefix(line, "status:"):
			status = strings.TrimSpace(line)
		case strings.HasPrefix(line, "detail:"):
			datasource = strings.TrimSpace(strings.TrimPrefix(line, "detail:"))
			if datasource == "" && i+1 < len(lines) {
				datasource = strings.TrimSpace(lines[i+1])
			}
		}
	}
	return status, datasource
}

// ShellQuote quotes s for a POSIX shell.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CurlGet runs curl through sh and splits its output into the body and the
// status code, which curl prints last.
func CurlGet(ctx context.Context, sh Shell, url string, header ...string) (int, string, error) {
	cmd := "curl -sS -w '\\n%{http_code}'"
	for _, h := range header {
		cmd += " -H " + ShellQuote(h)
	}
	out, exit, err := sh.Run(ctx, cmd+" "+ShellQuote(url))
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
