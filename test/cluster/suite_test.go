//go:build cluster

// Package cluster_test proves the local single-node cluster of hack/cluster
// (make cluster-up / cluster-down): a real kubelet, kube-proxy and containerd
// on this host run a Pod from a locally imported image with a native sidecar,
// the host reaches it through a ClusterIP, teardown leaves the host as it was,
// and bring-up works after everything was killed with SIGKILL.
//
// It changes the host (links, cgroups, sysctls, netfilter), so it runs only as
// root and only through `make test-cluster`, which builds it with the
// cluster tag; `go test ./...` does not build it.
package cluster_test

import (
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

func TestCluster(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(2 * time.Minute)
	SetDefaultEventuallyPollingInterval(250 * time.Millisecond)
	// Eventually(...).WithContext(ctx) must still give up after the default
	// timeout, not wait for the whole run's.
	EnforceDefaultTimeoutsWhenUsingContexts()
	RunSpecs(t, "Local Cluster Suite")
}

var _ = BeforeSuite(func() {
	// Built only with the cluster tag (make test-cluster): it changes the host.
	if os.Geteuid() != 0 {
		controlplane.Unavailable("the local cluster needs root (links, cgroups, mounts, containerd)")
	}
})
