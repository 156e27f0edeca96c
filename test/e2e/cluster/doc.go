// Package cluster is the end-to-end suite for a real cluster with KubeVirt:
// the operator installed with kustomize (config/overlays/builtin-certs), VMs
// started by KubeVirt's own controllers from a containerDisk made from the
// project's Debian VM image (test/vm), checked from inside through their
// serial consoles (KubeVirt's console subresource). It is built with the
// e2e tag and names its kubectl context explicitly ($KUBE_CONTEXT, in the
// kubeconfig $KUBECONFIG names). `make test-e2e-cluster` runs it on the
// local single-node cluster (hack/cluster/e2e.sh): up, KubeVirt, the images,
// the suite, down.
package cluster
