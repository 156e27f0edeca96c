package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestKubectlPluginUsage checks what a user sees for a wrong command line:
// the usage on stderr and exit status 2, before any cluster is contacted.
func TestKubectlPluginUsage(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 2, "usage: kubectl imds show <vm>"},
		{[]string{"--help"}, 0, "--dialect nocloud|openstack|ec2|v1"},
		{[]string{"list"}, 2, `unknown command "list"`},
		{[]string{"show"}, 2, "want exactly one VM name, got 0 arguments"},
		{[]string{"show", "a", "b"}, 2, "want exactly one VM name, got 2 arguments"},
		{[]string{"show", "vm", "--colour"}, 2, "unknown flag: --colour"},
		{[]string{"show", "vm", "--kubeconfig", "/nonexistent/kubeconfig"}, 1, "/nonexistent/kubeconfig"},
	} {
		var stdout, stderr bytes.Buffer
		code := runKubectlPlugin(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("kubectl imds %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
		if stdout.Len() != 0 {
			t.Errorf("kubectl imds %v: printed %q on stdout", tc.args, stdout.String())
		}
	}
}
