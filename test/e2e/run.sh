#!/usr/bin/env bash
# Runs the kind end-to-end suite (test/e2e/kind) against the kind cluster named
# by KIND_CLUSTER_NAME (default kind), through the kubectl context
# kind-$KIND_CLUSTER_NAME (or KUBE_CONTEXT) only — never the current context,
# which other projects on the same host may switch at any time.
#
#   KIND_CLUSTER_NAME=my-cluster ./test/e2e/run.sh
#
# The cluster needs KubeVirt, and the image $IMG (default kubevirt-imds:dev)
# loaded: make docker-build-all kind-load-all KIND_CLUSTER_NAME=my-cluster.
set -euo pipefail
cd "$(dirname "$0")/../.."

export KIND_CLUSTER_NAME=${KIND_CLUSTER_NAME:-kind}
export KUBE_CONTEXT=${KUBE_CONTEXT:-kind-$KIND_CLUSTER_NAME}
export IMG=${IMG:-kubevirt-imds:dev}

kctl() { kubectl --context "$KUBE_CONTEXT" "$@"; }

if ! kubectl config get-contexts "$KUBE_CONTEXT" >/dev/null 2>&1; then
  echo "run.sh: no kubectl context $KUBE_CONTEXT (kind create cluster --name $KIND_CLUSTER_NAME makes it)" >&2
  exit 1
fi
kctl get crd virtualmachineinstances.kubevirt.io >/dev/null ||
  { echo "run.sh: KubeVirt is not installed in $KUBE_CONTEXT" >&2; exit 1; }

echo "run.sh: kind e2e suite against $KUBE_CONTEXT, image $IMG" >&2
exec go test -tags e2e ./test/e2e/kind/ -count=1 -timeout 60m -v -args -ginkgo.v "$@"
