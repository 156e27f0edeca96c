#!/usr/bin/env bash
# Builds the binaries of the local single-node cluster and prints the directory
# that holds them:
#   kubelet, kube-proxy, kube-scheduler, kube-controller-manager  (hack/tools/cluster)
#   crictl                                                         (sigs.k8s.io/cri-tools)
#   pause, testserver, imgpack                                     (hack/tools/cluster/image)
#   coredns, the DNS add-on                                        (hack/tools/coredns)
#   kube-apiserver, etcd, kubectl  -> hack/envtest-assets.sh's build
#
# Like hack/envtest-assets.sh, everything is compiled from Go modules
# (CGO_ENABLED=0) into a cache outside the work tree (default
# ~/.cache/kubevirt-imds/cluster), so fresh clones on the same machine reuse it:
#   node-<version>-<key>   the Kubernetes binaries and crictl, keyed by
#                          hack/tools/cluster/go.sum (a cold build takes minutes)
#   tools-<key>            the image tools, keyed by their module and sources (seconds)
#   coredns-<key>          CoreDNS, keyed by hack/tools/coredns (a cold build takes minutes)
#   <version>-<key>        links to both and to the envtest build: the printed directory
# kube-apiserver, etcd and kubectl are not rebuilt: the envtest build is the
# same Kubernetes version, and other tests keep it warm.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
k8s_version=v1.37.2
crictl_version=v1.37.0
cache=${KUBEVIRT_IMDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-imds}/cluster
tools=$root/hack/tools/cluster

log() { echo "node-assets: $*" >&2; }
hash12() { sha256sum | cut -c1-12; }

envtest_dir=$("$root/hack/envtest-assets.sh")
node_dir=$cache/node-$k8s_version-$({ cat "$tools/go.sum"; echo "$crictl_version"; } | hash12)
tools_dir=$cache/tools-$({ cat "$tools/image/go.mod" "$tools/image/go.sum"
  find "$tools/image" -name '*.go' -print0 | sort -z | xargs -0 cat; } | hash12)
dns_dir=$cache/coredns-$(cat "$root/hack/tools/coredns/go.sum" "$root/hack/tools/coredns/main.go" | hash12)
dir=$cache/$k8s_version-$(echo "$node_dir $tools_dir $dns_dir $envtest_dir" | hash12)

node_binaries=(kubelet kube-proxy kube-scheduler kube-controller-manager crictl)
tools_binaries=(pause testserver imgpack)
dns_binaries=(coredns)
envtest_binaries=(kube-apiserver etcd kubectl)

# has DIR BINARY... is true when every BINARY is an executable in DIR.
has() {
  local d=$1 b
  shift
  for b in "$@"; do [[ -x $d/$b ]] || return 1; done
}

if has "$dir" "${node_binaries[@]}" "${tools_binaries[@]}" "${dns_binaries[@]}" "${envtest_binaries[@]}"; then
  echo "$dir"
  exit 0
fi

# Two bring-ups at once must not build into the same temporary directories.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.gitCommit=unknown \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=37"

build_node() {
  local start=$SECONDS
  rm -rf "$node_dir.tmp"
  mkdir -p "$node_dir.tmp"
  log "building kubelet, kube-proxy, kube-scheduler, kube-controller-manager $k8s_version (cold: 10-20 minutes on 2 busy cores)"
  # One go build for the four commands, so that their shared packages compile once.
  (cd "$tools" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$node_dir.tmp/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-controller-manager)
  log "building crictl $crictl_version"
  # go install with a version builds with cri-tools' own go.mod, checked
  # against the checksum database.
  CGO_ENABLED=0 GOBIN="$node_dir.tmp" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
  rm -rf "$node_dir"
  mv "$node_dir.tmp" "$node_dir"
  log "node binaries built in $((SECONDS - start))s: $node_dir"
}

build_tools() {
  rm -rf "$tools_dir.tmp"
  mkdir -p "$tools_dir.tmp"
  log "building pause, testserver, imgpack"
  (cd "$tools/image" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tools_dir.tmp/" \
    ./pause ./testserver ./imgpack)
  rm -rf "$tools_dir"
  mv "$tools_dir.tmp" "$tools_dir"
}

build_dns() {
  rm -rf "$dns_dir.tmp"
  mkdir -p "$dns_dir.tmp"
  log "building coredns (the DNS add-on; cold: a few minutes)"
  (cd "$root/hack/tools/coredns" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dns_dir.tmp/coredns" .)
  rm -rf "$dns_dir"
  mv "$dns_dir.tmp" "$dns_dir"
}

has "$node_dir" "${node_binaries[@]}" || build_node
has "$tools_dir" "${tools_binaries[@]}" || build_tools
has "$dns_dir" "${dns_binaries[@]}" || build_dns

rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
for b in "${node_binaries[@]}"; do ln -s "$node_dir/$b" "$dir.tmp/$b"; done
for b in "${tools_binaries[@]}"; do ln -s "$tools_dir/$b" "$dir.tmp/$b"; done
for b in "${dns_binaries[@]}"; do ln -s "$dns_dir/$b" "$dir.tmp/$b"; done
for b in "${envtest_binaries[@]}"; do ln -s "$envtest_dir/$b" "$dir.tmp/$b"; done
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
