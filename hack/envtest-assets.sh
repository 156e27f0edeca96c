#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver, etcd, kubectl) from Go modules
# and prints the directory that holds them, for KUBEBUILDER_ASSETS.
#
# Prebuilt envtest archives cannot be downloaded in this project's CI, so the
# binaries are compiled from the pinned modules in hack/tools/{envtest,etcd}.
# They land in a cache outside the work tree (default ~/.cache/kubevirt-imds),
# keyed by the tools modules' go.sum, so fresh clones on the same machine reuse them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
k8s_version=v1.37.2
cache=${KUBEVIRT_IMDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-imds}
key=$(cat "$root"/hack/tools/envtest/go.sum "$root"/hack/tools/etcd/go.sum | sha256sum | cut -c1-12)
dir="$cache/envtest/$k8s_version-$key"

if [[ -x $dir/kube-apiserver && -x $dir/etcd && -x $dir/kubectl ]]; then
  echo "$dir"
  exit 0
fi

mkdir -p "$dir.tmp"
log() { echo "envtest-assets: $*" >&2; }

commit=unknown
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.gitCommit=$commit \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=37"

start=$SECONDS
log "building kube-apiserver $k8s_version (a cold build takes about 4 minutes)"
(cd "$root/hack/tools/envtest" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
  -o "$dir.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
log "building kubectl"
(cd "$root/hack/tools/envtest" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
  -o "$dir.tmp/kubectl" k8s.io/kubernetes/cmd/kubectl)
log "building etcd"
(cd "$root/hack/tools/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
  -o "$dir.tmp/etcd" go.etcd.io/etcd/server/v3)
rm -rf "$dir"
mv "$dir.tmp" "$dir"
log "done in $((SECONDS - start))s: $dir"
echo "$dir"
