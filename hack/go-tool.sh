#!/usr/bin/env bash
# Builds a pinned command-line tool from its nested module in hack/tools/NAME
# and prints its path:
#
#   hack/go-tool.sh kubebuilder    sigs.k8s.io/kubebuilder/v4
#   hack/go-tool.sh promtool       github.com/prometheus/prometheus/cmd/promtool
#
# Release archives cannot be downloaded in this project's CI, so each is
# compiled from Go modules, into a cache outside the work tree (default
# ~/.cache/kubevirt-imds) keyed by the tools module's go.sum, so that fresh
# clones on the same machine reuse it. promtool is built with the build tag
# remove_all_sd (Prometheus's own switch for custom builds): the rules tests
# need none of its service discovery clients, which are most of its
# compile (the cloud SDKs).
set -euo pipefail

name=${1:?usage: hack/go-tool.sh kubebuilder|promtool}
case $name in
  kubebuilder) pkg=sigs.k8s.io/kubebuilder/v4 tags= ;;
  promtool) pkg=github.com/prometheus/prometheus/cmd/promtool tags=remove_all_sd ;;
  *) echo "go-tool.sh: unknown tool $name" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KUBEVIRT_IMDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-imds}
key=$({ cat "$root/hack/tools/$name/go.sum"; echo "tags=$tags"; } | sha256sum | cut -c1-12)
bin="$cache/$name/$key/$name"

if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$(dirname "$bin")"
echo "$name: building from Go modules (a cold build takes a few minutes)" >&2
(cd "$root/hack/tools/$name" && CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "-s -w" -o "$bin.tmp" "$pkg")
mv "$bin.tmp" "$bin"
echo "$bin"
