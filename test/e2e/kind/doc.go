// Package kind is the end-to-end suite for a real cluster: kind with
// KubeVirt, the operator installed with kustomize, VMs from containerdisks
// checked from inside through their serial consoles. It is built with the
// e2e tag (`go test -tags e2e ./test/e2e/kind/`, or ./test/e2e/run.sh) and
// names its kubectl context explicitly: $KUBE_CONTEXT, else
// kind-$KIND_CLUSTER_NAME (default kind-kind).
package kind
