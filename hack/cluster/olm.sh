#!/usr/bin/env bash
# Operator Lifecycle Manager on the local cluster, as its users install it,
# with no registry:
#
#   hack/cluster/olm.sh install      OLM v0.38.0's release manifests, rendered
#                                    from its chart as its release script does:
#                                    CRDs, the olm and catalog operators, the
#                                    package server
#   hack/cluster/olm.sh catalog IMG  the bundle (bundle/, its image set to IMG)
#                                    and a file-based catalog holding it, made
#                                    with opm; prints the catalog image's
#                                    reference, for a CatalogSource
#
# OLM's images are packed from binaries built from Go modules
# (hack/cluster/olm-assets.sh) and imported into containerd. OLM pulls an
# image that is named by tag on every start (its catalog Pods' and bundle
# unpack jobs' pull policy is Always unless the reference is a digest), so
# every image OLM starts is named by digest: containerd keeps the imported
# image under its tag and under repository@digest as well.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OLM_VERSION=v0.38.0
OLM_IMAGE=kubevirt-imds.local/olm:$OLM_VERSION
OPM_IMAGE=kubevirt-imds.local/opm:v1.61.0
BUNDLE_REPO=kubevirt-imds.local/kubevirt-imds-bundle
CATALOG_REPO=kubevirt-imds.local/kubevirt-imds-catalog
# The image the bundle's manifests name, which `catalog IMG` replaces.
BUNDLE_PLACEHOLDER_IMAGE=ghcr.io/kubevirt-imds/kubevirt-imds:v0.1.0
# The user of upstream's OLM and opm images: OLM's release runs its
# operators with runAsNonRoot, which the kubelet only lets a numeric non-root
# image user pass.
IMAGE_USER=1001

usage() {
  echo "usage: hack/cluster/olm.sh install | catalog IMG" >&2
}

# prepare checks the cluster is up and loads the cluster's and OLM's
# binaries, which every command needs.
prepare() {
  require_root
  component_pid containerd >/dev/null || die "the cluster is not up (make cluster-up)"
  load_bin_dir
  load_olm_assets
}

# load_olm_assets sets OLM_BIN (the built binaries) and OLM_MODULE (OLM's
# module, with its chart and release values).
load_olm_assets() {
  local out
  out=$("$root/hack/cluster/olm-assets.sh")
  OLM_BIN=$(sed -n 1p <<<"$out")
  OLM_MODULE=$(sed -n 2p <<<"$out")
}

# digest_ref NAME tags the imported image NAME as repository@digest too (what
# a pull by digest would have stored) and prints that reference.
digest_ref() {
  local full digest ref
  full=$(normalized_image_name "$1")
  digest=$(ctr_k8s images ls "name==$full" | awk 'NR == 2 {print $3}')
  [[ $digest == sha256:* ]] || die "no digest for image $full"
  ref=${full%:*}@$digest
  ctr_k8s images rm "$ref" >/dev/null 2>&1 || true
  ctr_k8s images tag "$full" "$ref" >/dev/null
  echo "$ref"
}

# library_files BINARY prints imgpack -file flags for BINARY's shared
# libraries and loader, at the paths the loader looks for them.
library_files() {
  local lib
  for lib in $(ldd "$1" | grep -o '/[^ ]*'); do
    echo "-file"
    echo "$(readlink -f "$lib"):$lib"
  done
}

# import_olm_images packs and imports OLM's image (its operators and
# utilities, and cp: bundle unpack jobs run `/bin/cp -Rv /bin/cpb ...` in it,
# so it is Debian's coreutils cp with the libraries it links) and opm's
# image (opm and grpc_health_probe), and sets OLM_REF and OPM_REF.
import_olm_images() {
  local flags=() b
  for b in olm catalog package-server copy-content cpb; do
    flags+=(-file "$OLM_BIN/$b:/bin/$b")
  done
  flags+=(-file "$(readlink -f /bin/cp):/bin/cp")
  mapfile -t -O "${#flags[@]}" flags < <(library_files /bin/cp)
  import_image "$OLM_IMAGE" "${flags[@]}" -entrypoint /bin/olm -user "$IMAGE_USER" -tmp
  OLM_REF=$(digest_ref "$OLM_IMAGE")
  import_image "$OPM_IMAGE" -file "$OLM_BIN/opm:/bin/opm" -file "$OLM_BIN/grpc_health_probe:/bin/grpc_health_probe" \
    -entrypoint /bin/opm -user "$IMAGE_USER" -tmp
  OPM_REF=$(digest_ref "$OPM_IMAGE")
}

# render_olm renders OLM's chart into DIR as OLM's release script
# (scripts/package_release.sh) renders its release manifests: `helm template`
# with the release's values (deploy/upstream/values.yaml), the images set to
# the ones imported here (by digest, so never pulled; opm's serves ConfigMap
# catalogs too, as upstream's configmap-operator-registry image does with the
# same opm). The release's catalog of community operators is left out: it can
# only be pulled from quay.io.
render_olm() {
  local dir=$1 chart=$1/chart
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -R "$OLM_MODULE/deploy/chart" "$chart"
  chmod -R u+w "$chart"
  sed -i "s/^version:.*/version: ${OLM_VERSION#v}/" "$chart/Chart.yaml"
  "$OLM_BIN/helm" template olm "$chart" -n olm -f "$OLM_MODULE/deploy/upstream/values.yaml" \
    --set "olm.image.ref=$OLM_REF" --set "catalog.image.ref=$OLM_REF" \
    --set "package.image.ref=$OLM_REF" --set package.image.pullPolicy=IfNotPresent \
    --set-string "catalog.opmImageArgs=--opmImage=$OPM_REF" \
    --set-string "catalog.commandArgs=--configmapServerImage=$OPM_REF" \
    --include-crds --output-dir "$dir/rendered" >/dev/null
  rm "$dir/rendered/olm/templates/0000_50_olm_17-upstream-operators.catalogsource.yaml"
  if grep -rq 'quay\.io' "$dir/rendered"; then
    die "OLM's rendered manifests still name an image on quay.io: $(grep -rm1 'quay\.io' "$dir/rendered")"
  fi
}

cmd_install() {
  prepare
  local start=$SECONDS dir=$STATE/olm/release
  mkdir -p "$STATE/images"
  import_olm_images
  render_olm "$dir"
  log "OLM $OLM_VERSION: CRDs ($dir/rendered/olm/crds)"
  kc apply --server-side -f "$dir/rendered/olm/crds" >/dev/null
  kc wait --for=condition=Established -f "$dir/rendered/olm/crds" --timeout=2m >/dev/null
  log "OLM $OLM_VERSION: operators ($dir/rendered/olm/templates)"
  kc apply --server-side -f "$dir/rendered/olm/templates" >/dev/null
  kc -n olm rollout status deployment/olm-operator --timeout=5m >&2
  kc -n olm rollout status deployment/catalog-operator --timeout=5m >&2
  # The package server is itself a CSV that the olm operator installs: its
  # Succeeded is OLM's own install working end to end.
  if ! kc -n olm wait csv/packageserver --for=jsonpath='{.status.phase}'=Succeeded --timeout=5m >&2; then
    kc -n olm get csv,pods -o wide >&2 || true
    die "OLM's packageserver CSV did not succeed; Pod logs in $STATE/pod-logs"
  fi
  log "OLM $OLM_VERSION installed in $((SECONDS - start))s"
}

# cmd_catalog IMG packs the bundle with the operator image IMG, and a
# file-based catalog with that bundle in its candidate channel, rendered by
# opm as `opm render` renders a bundle image, and prints the catalog image's
# digest reference. opm serves it without --cache-dir and builds its cache
# in /tmp at start: given --cache-dir, it refuses to start unless the cache is
# already there ("integrity check failed: read existing cache digest"), which
# upstream's catalog images prebuild with a RUN step as the image's user.
cmd_catalog() {
  (($# == 1)) || die "usage: hack/cluster/olm.sh catalog IMG"
  local img=$1 dir=$STATE/olm/catalog-build tag f flags=() bundle_ref catalog_ref named
  prepare
  tag=$(echo "$img" | sha256sum | cut -c1-12)
  rm -rf "$dir"
  mkdir -p "$dir/bundle" "$dir/configs/kubevirt-imds" "$STATE/images"
  cp -r "$root/bundle/manifests" "$root/bundle/metadata" "$dir/bundle/"
  named=$(grep -rlF "$BUNDLE_PLACEHOLDER_IMAGE" "$dir/bundle") || die "bundle/ no longer names $BUNDLE_PLACEHOLDER_IMAGE"
  xargs sed -i "s|$BUNDLE_PLACEHOLDER_IMAGE|$img|g" <<<"$named"
  for f in "$dir"/bundle/manifests/* "$dir"/bundle/metadata/*; do
    flags+=(-file "$f:/${f#"$dir/bundle/"}")
  done
  import_image "$BUNDLE_REPO:$tag" "${flags[@]}"
  bundle_ref=$(digest_ref "$BUNDLE_REPO:$tag")
  {
    printf -- '---\nschema: olm.package\nname: kubevirt-imds\ndefaultChannel: candidate\n'
    printf -- '---\nschema: olm.channel\npackage: kubevirt-imds\nname: candidate\nentries:\n- name: %s\n' \
      "$(awk '/^  name: / {print $2; exit}' "$dir/bundle/manifests/kubevirt-imds.clusterserviceversion.yaml")"
    # opm renders a bundle directory with an empty image; OLM unpacks the
    # bundle from the image this says.
    "$OLM_BIN/opm" render "$dir/bundle" -o yaml | sed -E "s|^image: .*|image: $bundle_ref|"
  } >"$dir/configs/kubevirt-imds/catalog.yaml"
  "$OLM_BIN/opm" validate "$dir/configs" >&2
  import_image "$CATALOG_REPO:$tag" -file "$OLM_BIN/opm:/bin/opm" -file "$OLM_BIN/grpc_health_probe:/bin/grpc_health_probe" \
    -file "$dir/configs/kubevirt-imds/catalog.yaml:/configs/kubevirt-imds/catalog.yaml" \
    -entrypoint /bin/opm -arg serve -arg /configs -user "$IMAGE_USER" -tmp
  catalog_ref=$(digest_ref "$CATALOG_REPO:$tag")
  log "catalog $catalog_ref: bundle $bundle_ref, operator image $img"
  echo "$catalog_ref"
}

main() {
  case ${1:-} in
    install) lock_state; cmd_install ;;
    catalog) shift; lock_state; cmd_catalog "$@" ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
