#!/usr/bin/env bash
# Builds promtool from the pinned module in hack/tools/promtool and prints its
# path. Release archives cannot be downloaded in this project's CI, so it is
# compiled from Go modules, into a cache outside the work tree (default
# ~/.cache/kubevirt-imds) keyed by the tools module's go.sum, so that fresh
# clones on the same machine reuse it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KUBEVIRT_IMDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-imds}
key=$(sha256sum "$root/hack/tools/promtool/go.sum" | cut -c1-12)
bin="$cache/promtool/$key/promtool"

if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$(dirname "$bin")"
echo "promtool: building from Go modules (a cold build takes a few minutes)" >&2
(cd "$root/hack/tools/promtool" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
  -o "$bin.tmp" github.com/prometheus/prometheus/cmd/promtool)
mv "$bin.tmp" "$bin"
echo "$bin"
