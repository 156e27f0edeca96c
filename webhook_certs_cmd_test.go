package main

import (
	"flag"
	"testing"
)

func TestCertFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"--webhook-cert-mode=builtin", "--webhook-cert-namespace=kubevirt-imds-system"}, true},
		{[]string{"--webhook-cert-mode=builtin", "--webhook-cert-namespace="}, false},
		{[]string{"--webhook-cert-mode=self-signed"}, false},
	} {
		var c certFlags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.addFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := c.validate(); (err == nil) != tc.ok {
			t.Errorf("%v: validate() = %v", tc.args, err)
		}
	}
}
