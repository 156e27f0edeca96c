#!/usr/bin/env bash
# Builds Operator Lifecycle Manager v0.38.0, opm v1.61.0 and Helm v4 for the
# local cluster's OLM install (hack/cluster/olm.sh) and prints the directory
# that holds them:
#   olm, catalog, package-server, copy-content, cpb, grpc_health_probe  (hack/tools/olm)
#   opm                                                                  (hack/tools/opm)
#   helm                                                                 (hack/tools/helm)
# Everything is compiled from Go modules (CGO_ENABLED=0; opm with the build
# tag containers_image_openpgp, as its release builds use, so it needs no
# gpgme) into a cache outside the work tree, keyed by the modules' go.sum
# (default ~/.cache/kubevirt-imds/olm; a cold build takes about 10 minutes on
# two cores). It also prints, on a second line, where OLM's module keeps its
# release chart and values (deploy/chart, deploy/upstream/values.yaml).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${KUBEVIRT_IMDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-imds}/olm
olm_tools=$root/hack/tools/olm
opm_tools=$root/hack/tools/opm
helm_tools=$root/hack/tools/helm

log() { echo "olm-assets: $*" >&2; }
hash12() { sha256sum | cut -c1-12; }

dir=$cache/$({ cat "$olm_tools/go.sum" "$opm_tools/go.sum" "$helm_tools/go.sum"; } | hash12)
binaries=(olm catalog package-server copy-content cpb grpc_health_probe opm helm)

built() {
  local b
  for b in "${binaries[@]}"; do [[ -x $dir/$b ]] || return 1; done
}

olm_module_dir() {
  (cd "$olm_tools" && go list -m -f '{{.Dir}}' github.com/operator-framework/operator-lifecycle-manager)
}

if ! built; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if ! built; then
    start=$SECONDS
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    log "building OLM v0.38.0 and grpc_health_probe (cold: about 10 minutes on 2 busy cores)"
    olm=github.com/operator-framework/operator-lifecycle-manager
    (cd "$olm_tools" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir.tmp/" \
      "$olm/cmd/olm" "$olm/cmd/catalog" "$olm/cmd/package-server" "$olm/cmd/copy-content" \
      "$olm/util/cpb" github.com/grpc-ecosystem/grpc-health-probe)
    # OLM's catalog Pods probe with this name.
    mv "$dir.tmp/grpc-health-probe" "$dir.tmp/grpc_health_probe"
    log "building opm v1.61.0"
    (cd "$opm_tools" && CGO_ENABLED=0 go build -trimpath -tags containers_image_openpgp -ldflags "-s -w" \
      -o "$dir.tmp/" github.com/operator-framework/operator-registry/cmd/opm)
    log "building helm"
    (cd "$helm_tools" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir.tmp/" helm.sh/helm/v4/cmd/helm)
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    log "built in $((SECONDS - start))s: $dir"
  fi
fi
echo "$dir"
olm_module_dir
