#!/usr/bin/env bash
# Runs the cluster end-to-end suite (test/e2e/cluster) against an existing
# cluster through the kubectl context KUBE_CONTEXT (default
# kind-$KIND_CLUSTER_NAME) only — never the current context, which other
# projects on the same host may switch at any time. For the local cluster,
# make test-e2e-cluster (hack/cluster/e2e.sh) does everything.
#
#   KIND_CLUSTER_NAME=my-cluster ./test/e2e/run.sh
#
# The cluster needs KubeVirt, the image $IMG (default kubevirt-imds:dev) and
# the VM image kubevirt-imds.local/debian-trixie-vm:v1 (hack/cluster/e2e.sh
# shows how it is made) loaded.
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

echo "run.sh: cluster e2e suite against $KUBE_CONTEXT, image $IMG" >&2
exec go test -tags e2e ./test/e2e/cluster/ -count=1 -timeout 60m -v -args -ginkgo.v "$@"
