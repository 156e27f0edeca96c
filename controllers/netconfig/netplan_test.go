package netconfig

import (
	"strings"
	"testing"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

func TestFromNetplanV2(t *testing.T) {
	doc := `network:
  version: 2
  ethernets:
    b:
      match: {macaddress: "02:00:00:00:00:0B"}
      dhcp4: true
      optional: true
    a:
      match: {macaddress: "02:00:00:00:00:0a"}
      set-name: eth0
      addresses: [192.0.2.10/24, "2001:db8::10/64"]
      gateway4: 192.0.2.1
      routes: [{to: default, via: "2001:db8::1"}, {to: 198.51.100.0/24, via: 192.0.2.254, metric: 50}]
      nameservers: {addresses: [192.0.2.53], search: [example.internal]}
      mtu: 9000
`
	n, err := FromNetplanV2(doc)
	if err != nil {
		t.Fatal(err)
	}
	if n.NetplanV2 != doc {
		t.Error("the document is not kept verbatim")
	}
	if len(n.Interfaces) != 2 || n.Interfaces[0].Name != "eth0" || n.Interfaces[1].Name != "b" {
		t.Fatalf("interfaces, sorted by key, renamed by set-name: %+v", n.Interfaces)
	}
	a, b := n.Interfaces[0], n.Interfaces[1]
	if a.MACAddress != "02:00:00:00:00:0a" || b.MACAddress != "02:00:00:00:00:0b" {
		t.Errorf("MACs not lower-cased: %q %q", a.MACAddress, b.MACAddress)
	}
	if a.MTU != 9000 || a.Gateway4 != "192.0.2.1" || len(a.Addresses) != 2 || a.Nameservers == nil || a.Nameservers.Search[0] != "example.internal" {
		t.Errorf("static NIC: %+v", a)
	}
	wantRoutes := []payload.Route{{To: "::/0", Via: "2001:db8::1"}, {To: "198.51.100.0/24", Via: "192.0.2.254", Metric: 50}}
	if len(a.Routes) != 2 || a.Routes[0] != wantRoutes[0] || a.Routes[1] != wantRoutes[1] {
		t.Errorf("routes %+v, want %+v", a.Routes, wantRoutes)
	}
	if !b.DHCP4 || !b.Optional {
		t.Errorf("DHCP NIC: %+v", b)
	}

	bare, err := FromNetplanV2("version: 2\nethernets:\n  e: {dhcp4: true}\n")
	if err != nil || len(bare.Interfaces) != 1 {
		t.Errorf("a document without the network key: %v %+v", err, bare)
	}
}

func TestFromNetplanV2Errors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"network: {version: 1}", "network.version: must be 2"},
		{"network: {version: 2, ethernets: {e: {match: {macaddress: nope}}}}", "network.ethernets.e.match.macaddress"},
		{"network: {version: 2, ethernets: {e: {addresses: [192.0.2.1]}}}", "network.ethernets.e.addresses[0]"},
		{"network: {version: 2, ethernets: {e: {gateway4: x}}}", "network.ethernets.e.gateway4"},
		{"network: {version: 2, ethernets: {e: {routes: [{to: nowhere}]}}}", "network.ethernets.e.routes[0].to"},
		{"network: {version: 2, ethernets: {e: {routes: [{to: default, via: x}]}}}", "network.ethernets.e.routes[0].via"},
		{"network: {version: 2, ethernets: {e: {nameservers: {addresses: [x]}}}}", "network.ethernets.e.nameservers.addresses[0]"},
		{"network: {version: 2, ethernets: {e: {dhcp: true}}}", "not a network-config version 2 document"},
		{"- a list", "not a network-config version 2 document"},
	} {
		_, err := FromNetplanV2(tc.doc)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.doc, err, tc.want)
		}
	}
}
