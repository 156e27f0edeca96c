#!/usr/bin/env bash
# Smoke test of the virt-launcher image without a cluster: unpacks the image tarball
# that hack/kubevirt/build.sh made into a root tree and runs its entrypoint chain
# (virt-launcher-monitor -> virt-launcher -> /usr/sbin/virtqemud wrapper -> libvirtd)
# as uid/gid 107 with the environment and directories the real launcher Pod gets
# (XDG_* dirs, /var/run/kubevirt*), in private mount and PID namespaces, without
# /dev/kvm. Passes when virt-launcher logs "Marked as ready" (connected to libvirt,
# command socket up). Needs root.
#
#   hack/kubevirt/smoke-launcher.sh [RESULT_DIR]   (default: build.sh's cached result)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${1:-$("$root/hack/kubevirt/build.sh")}
work=$root/tmp/kubevirt-build/smoke-launcher
log() { echo "smoke-launcher: $*" >&2; }

# unpack_image TARBALL DEST: applies the image's layers in order (file capabilities
# kept) into DEST.
unpack_image() {
  local tarball=$1 dest=$2 layer
  mkdir -p "$dest"
  for layer in $(tar -xOf "$tarball" manifest.json | grep -oE '"Layers":\[[^]]*\]' | grep -oE '[0-9a-f]{64}\.tar\.gz'); do
    tar -xOf "$tarball" "$layer" | tar --numeric-owner --xattrs --xattrs-include='*' -xzf - -C "$dest"
  done
}

# run_launcher ROOT: the launcher Pod's compute container, approximately.
run_launcher() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --pid --fork --propagation private -- bash -c '
    set -e
    r=$1
    mount --bind "$r" "$r"
    mount -t proc proc "$r/proc"
    mount -t tmpfs -o mode=755 tmpfs "$r/run"
    # A /dev without kvm: as in a non-privileged compute container under useEmulation.
    mount -t tmpfs -o mode=755 tmpfs "$r/dev"
    for d in null zero random urandom tty full; do
      touch "$r/dev/$d"
      mount --bind "/dev/$d" "$r/dev/$d"
    done
    mkdir -p "$r/dev/pts" "$r/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
    ln -s pts/ptmx "$r/dev/ptmx"
    mount -t tmpfs tmpfs "$r/dev/shm"
    # The Pod'"'"'s emptyDirs, owned by the non-root launcher.
    for d in kubevirt kubevirt-private libvirt kubevirt-ephemeral-disks kubevirt/container-disks kubevirt/sockets; do
      mkdir -p "$r/run/$d"
    done
    chown -R 107:107 "$r/run/kubevirt" "$r/run/kubevirt-private" "$r/run/libvirt" "$r/run/kubevirt-ephemeral-disks"
    chmod 1777 "$r/tmp"
    exec chroot --userspec=107:107 "$r" env -i HOME=/home/qemu \
      PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      XDG_CACHE_HOME=/var/run/kubevirt-private XDG_CONFIG_HOME=/var/run/kubevirt-private \
      XDG_RUNTIME_DIR=/var/run POD_NAME=virt-launcher-smoke-abcde \
      timeout 60 /usr/bin/virt-launcher-monitor --qemu-timeout 240s --name smoke \
      --uid 11111111-2222-3333-4444-555555555555 --namespace default \
      --kubevirt-share-dir /var/run/kubevirt --ephemeral-disk-dir /var/run/kubevirt-ephemeral-disks \
      --container-disk-dir /var/run/kubevirt/container-disks --grace-period-seconds 15 \
      --hook-sidecars 0 --ovmf-path /usr/share/OVMF --run-as-nonroot
  ' bash "$1"
}

main() {
  [[ $(id -u) == 0 ]] || { log "needs root"; exit 1; }
  local tarball
  tarball=$(awk '$1 ~ /\/virt-launcher:/ {print $2}' "$dir/images.txt")
  [[ -f $tarball ]] || { log "no virt-launcher image in $dir/images.txt"; exit 1; }
  rm -rf "$work"
  log "unpacking $tarball"
  unpack_image "$tarball" "$work/root"
  log "running virt-launcher-monitor as 107:107 (stops itself after 60 s)"
  run_launcher "$work/root" >"$work/launcher.log" 2>&1 || true
  rm -rf "$work/root"
  if grep -q '"Marked as ready"' "$work/launcher.log"; then
    log "PASS: virt-launcher connected to libvirt and marked itself ready (log: $work/launcher.log)"
  else
    log "FAIL: no \"Marked as ready\"; log: $work/launcher.log"
    tail -20 "$work/launcher.log" >&2
    exit 1
  fi
}

main "$@"; exit
