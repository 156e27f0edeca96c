#!/usr/bin/env bash
# make test-e2e-cluster: the cluster end-to-end suite (test/e2e/cluster) on the
# local single-node cluster, from nothing: up, KubeVirt v1.8.0 from its release
# manifests, the operator's image (the Dockerfile's build) and the VM image as
# a containerDisk, the suite with the operator installed by kustomize; then
# OLM v0.38.0 (hack/cluster/olm.sh), a catalog holding the bundle, and the
# specs labelled olm or bundle with the operator installed through a
# Subscription; down. Each step's seconds go to the log; every component's
# log stays under tmp/cluster/logs and tmp/cluster/pod-logs (kept after down)
# and a failure names them.
#
#   hack/cluster/e2e.sh [ginkgo flags]     KEEP_CLUSTER=1 leaves the cluster up
#
# LABEL_FILTER picks the specs of a single pass (default: two passes, the
# first with all but the benchmark, label bench, the OLM spec, label olm,
# and, on a kernel without dummy links, bridge-binding; the second with the
# OLM spec and the specs that hold for the bundle's configuration, label
# bundle; make bench-cluster runs LABEL_FILTER=bench).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VM_IMAGE=kubevirt-imds.local/debian-trixie-vm:v1
# A tag of its own per run: on a cluster kept up (KEEP_CLUSTER=1) the next
# run's install then rolls the manager and the node agent onto the new build.
IMG=${IMG:-kubevirt-imds:e2e-$(date +%s)}
cluster=$root/hack/cluster/cluster.sh

step() {
  local name=$1 start=$SECONDS rc=0
  shift
  log "e2e: $name"
  "$@" || rc=$?
  log "e2e: $name: $((SECONDS - start))s$( ((rc == 0)) || echo ", failed (exit $rc)")"
  return "$rc"
}

# import_vm_image packs the project's Debian VM image (hack/guest-vm-image.sh)
# as a containerDisk: the disk at /disk/, and the kernel and initramfs the VM
# boots with (it has no boot loader) at /boot/.
import_vm_image() {
  local dir
  dir=$(bash "$root/hack/guest-vm-image.sh")
  "$cluster" import-files "$VM_IMAGE" "$dir/disk.qcow2:/disk/disk.qcow2" \
    "$dir/vmlinuz:/boot/vmlinuz" "$dir/initrd.img:/boot/initrd.img"
}

# default_label_filter prints the specs of the first pass that this host can
# run: all but the benchmark and the OLM spec, and none labelled
# bridge-binding if the kernel has no dummy links. KubeVirt's bridge binding
# moves the Pod's address onto a dummy link (pkg/network/setup/netpod), and
# without the driver virt-handler fails every such VMI: "Critical network
# error: LinkAdd: operation not supported".
default_label_filter() {
  local ns=kvimds-probe-$$ filter='!bench && !olm'
  ip netns add "$ns"
  if ! ip -n "$ns" link add probe0 type dummy 2>/dev/null; then
    log "e2e: this kernel has no dummy links, which KubeVirt's bridge binding needs: the specs labelled bridge-binding do not run"
    filter+=' && !bridge-binding'
  fi
  ip netns del "$ns"
  echo "$filter"
}

run_suite() {
  local bin
  bin=$(cat "$STATE/bin-dir")
  # The suite's kubectl is the cluster's, and its only context the cluster's.
  PATH=$bin:$PATH KUBECONFIG=$KUBECONFIG_FILE KUBE_CONTEXT=$CONTEXT IMG=$IMG OLM_CATALOG_IMAGE=${OLM_CATALOG_IMAGE:-} \
    NODE_FOOTPRINT="$cluster footprint" \
    go test -tags e2e ./test/e2e/cluster/ -count=1 -timeout 90m -v -args -ginkgo.v \
    -ginkgo.label-filter="${LABEL_FILTER:-$(default_label_filter)}" "$@"
}

# build_olm_assets_idle builds OLM's and opm's binaries (hack/cluster/olm-assets.sh)
# in the background at the lowest CPU priority, and sets OLM_ASSETS_JOB: cold,
# that is minutes of compiling that then run on the CPU the emulated VMs of
# the first pass leave idle, and never take CPU from them (nice 19).
build_olm_assets_idle() {
  # Its own session (setsid), so that stop_olm_assets reaches the compilers
  # too. A new session is also a new scheduler autogroup, and the kernel
  # shares CPU between autogroups by the group's nice value, not the tasks':
  # nice alone would give the build an equal share beside this script's own
  # builds (measured: OLM then compiled beside KubeVirt's build, not after
  # it). So the group gets nice 19 as well.
  setsid bash -c '
    if [ -w /proc/self/autogroup ]; then echo 19 >/proc/self/autogroup; fi
    exec nice -n 19 "$0"' "$root/hack/cluster/olm-assets.sh" >"$STATE/logs/olm-assets.log" 2>&1 &
  OLM_ASSETS_JOB=$!
  log "e2e: building OLM's binaries in the background at nice 19 (log $STATE/logs/olm-assets.log)"
}

# run_olm_pass installs OLM, makes the catalog for the run's image, and runs
# the specs labelled olm or bundle, the suite installing the operator through
# OLM.
run_olm_pass() {
  local catalog
  if [[ -n ${OLM_ASSETS_JOB:-} ]]; then
    step "OLM's binaries (background build)" wait "$OLM_ASSETS_JOB" || return
    OLM_ASSETS_JOB=
  fi
  step "OLM" "$root/hack/cluster/olm.sh" install || return
  catalog=$("$root/hack/cluster/olm.sh" catalog "$IMG") || return
  OLM_CATALOG_IMAGE=$catalog LABEL_FILTER='olm || bundle' run_suite "$@"
}

# stop_olm_assets ends a background build that the run no longer waits for
# (the first pass failed), so that no build outlives the run.
stop_olm_assets() {
  [[ -n ${OLM_ASSETS_JOB:-} ]] || return 0
  kill -TERM -- "-$OLM_ASSETS_JOB" 2>/dev/null || true
  wait "$OLM_ASSETS_JOB" 2>/dev/null || true
}

main() {
  [[ $(id -u) == 0 ]] || die "must run as root (the local cluster)"
  cd "$root"
  local start=$SECONDS rc=0
  OLM_ASSETS_JOB=
  if [[ ${KEEP_CLUSTER:-} != 1 ]]; then
    trap 'stop_olm_assets; log "e2e: logs in $STATE/logs and $STATE/pod-logs"; "$cluster" down >&2 || true' EXIT
  else
    trap stop_olm_assets EXIT
  fi
  step "cluster up" "$cluster" up || return
  if [[ -z ${LABEL_FILTER:-} ]]; then
    build_olm_assets_idle
  fi
  step "KubeVirt" "$cluster" install-kubevirt || return
  step "operator image" "$cluster" import-operator "$IMG" || return
  step "VM image" import_vm_image || return
  step "suite" run_suite "$@" || rc=$?
  if ((rc == 0)) && [[ -z ${LABEL_FILTER:-} ]]; then
    step "suite through OLM" run_olm_pass "$@" || rc=$?
  fi
  if ((rc != 0)); then
    log "e2e: the suite failed; component logs: $STATE/logs, Pod logs: $STATE/pod-logs"
  fi
  log "e2e: done in $((SECONDS - start))s"
  return "$rc"
}

main "$@"
