// Command coredns is CoreDNS v1.12 with only the plugins a cluster's DNS
// add-on uses (kubeadm's Corefile, less forward: the local cluster has no
// upstream to forward to), for the local cluster's kube-dns Service. CoreDNS's
// own main links every plugin, cloud providers' SDKs included; its
// documentation has custom builds choose their plugins by import, as here.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The plugins' order in a server block, as CoreDNS's plugin.cfg orders them.
func init() {
	dnsserver.Directives = []string{"reload", "ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes", "loop"}
}

func main() {
	coremain.Run()
}
