#!/usr/bin/env bash
# Builds the bootable Debian VM image that test/vm boots under qemu ("tier 2"
# guests) and prints the directory holding it:
#
#   disk.qcow2    ext4 root file system on the whole disk (root=/dev/vda), qcow2
#   vmlinuz       the kernel of linux-image-cloud-amd64, for qemu -kernel
#   initrd.img    its initramfs, for qemu -initrd
#   manifest      "key value" lines: suite, kernel version, cloud-init version
#
# The image is Debian trixie (cloud-init 25.x rendering netplan v2 for
# systemd-networkd, like current Ubuntu cloud images), built from Debian
# packages only: debootstrap --variant=minbase, then apt inside the tree, then
# `mkfs.ext4 -d` and qemu-img. The serial console ttyS0 logs root in
# automatically, so tests can type commands there without a password.
#
# Everything it downloads or builds stays in the repository's tmp/guest-vm/:
# downloaded packages in cache/ (reused by every build), the image in
# <suite>-<key>/, where <key> hashes the recipe (the suite, its packages and
# the build functions below), so changing the recipe builds a new image and an
# unchanged one is reused at once. Concurrent callers serialize on a lock; a
# build only becomes visible when complete, and replaces older recipes' images.
#
# Measured on a 2-core machine: 140 s with the packages to fetch at load ~2,
# 386 s from the package cache at load 8; 480 MB qcow2. A warm call: 0.1 s.
#
# The Debian mirror is taken from $KUBEVIRT_IMDS_DEBIAN_MIRROR, else from the
# host's apt sources. Needs root; installs debootstrap, e2fsprogs and qemu-utils
# with apt when they are missing. Set KUBEVIRT_IMDS_VM_SUITE=bookworm to build
# the older generation instead (cloud-init 22.4, ENI).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=$root/tmp/guest-vm
suite=${KUBEVIRT_IMDS_VM_SUITE:-trixie}
log() { echo "guest-vm-image: $*" >&2; }

# Packages installed in the tree on top of minbase, per suite.
# linux-image-cloud-amd64: virtio drivers, small; pulls initramfs-tools.
# systemd-sysv, udev, login: minbase has no init, device manager or login(1).
# e2fsprogs: cloud-init's resizefs runs resize2fs on the root.
# trixie: netplan.io renders cloud-init's v2 config for systemd-networkd.
# bookworm: ifupdown + isc-dhcp-client are what cloud-init's ENI renderer drives.
common="linux-image-cloud-amd64 systemd-sysv udev login e2fsprogs cloud-init python3 curl iproute2 netbase ca-certificates"
case $suite in
trixie) packages="$common netplan.io" ;;
bookworm) packages="$common ifupdown isc-dhcp-client net-tools" ;;
*)
  log "unknown suite $suite (want trixie or bookworm)"
  exit 2
  ;;
esac

# shellcheck source=hack/guest-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >&2; }
}

# build_tree DIR: the root file system.
build_tree() {
  local tree=$1
  mkdir -p "$base/cache/debootstrap" "$base/cache/apt/$suite"
  debootstrap --variant=minbase --cache-dir="$base/cache/debootstrap" "$suite" "$tree" "$(mirror)" >&2
  log "debootstrap done after $((SECONDS - start))s"
  cp /etc/resolv.conf "$tree/etc/resolv.conf"
  # No daemon may start inside the build chroot.
  printf '#!/bin/sh\nexit 101\n' >"$tree/usr/sbin/policy-rc.d"
  chmod 755 "$tree/usr/sbin/policy-rc.d"
  mount -t proc proc "$tree/proc"
  # Downloaded packages outlive the tree, so a changed recipe fetches only what is new.
  mount --bind "$base/cache/apt/$suite" "$tree/var/cache/apt/archives"
  # The initramfs must carry the virtio and ext4 modules whatever the host has.
  mkdir -p "$tree/etc/initramfs-tools/conf.d"
  echo MODULES=most >"$tree/etc/initramfs-tools/conf.d/kubevirt-imds-vm"
  chroot "$tree" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get update -q >&2
  # shellcheck disable=SC2086 # the package list is meant to split
  chroot "$tree" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
    apt-get install -y -q --no-install-recommends $packages >&2
  umount "$tree/var/cache/apt/archives" "$tree/proc"
  rm -rf "$tree"/var/lib/apt/lists/* "$tree/usr/sbin/policy-rc.d"

  # The guest: root on the whole virtio disk, no fsck (every boot is a fresh
  # overlay of a clean file system).
  echo '/dev/vda / ext4 defaults 0 0' >"$tree/etc/fstab"
  # An empty machine-id makes systemd treat the boot as the first one and
  # generate an id; cloud-init sets the hostname from meta-data.
  : >"$tree/etc/machine-id"
  echo localhost >"$tree/etc/hostname"
  # No DNS in the Pod network the tests build; the host's resolver must not leak in.
  echo 'nameserver 10.0.2.1' >"$tree/etc/resolv.conf"
  if [[ $suite == trixie ]]; then
    # netplan's backend, which Debian leaves to the image to enable.
    chroot "$tree" systemctl enable systemd-networkd >&2
  fi
  # Root logs in on the serial console by itself, for tests to type commands.
  mkdir -p "$tree/etc/systemd/system/serial-getty@ttyS0.service.d"
  cat >"$tree/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 - $TERM
EOF
  # No sshd and no locales package in the image: nothing to generate.
  cat >"$tree/etc/cloud/cloud.cfg.d/90-kubevirt-imds-vm.cfg" <<'EOF'
locale: C.UTF-8
ssh_genkeytypes: []
EOF
  # Mark /etc and /var as up to date with /usr, as a first boot would: the
  # dynamic linker and journal catalog rebuilds cost every TCG boot seconds.
  chroot "$tree" /usr/lib/systemd/systemd-update-done
  # shellcheck disable=SC2016 # dpkg-query's own format fields
  {
    echo "suite $suite"
    echo "kernel $(basename "$(readlink -f "$tree/vmlinuz")" | sed 's/^vmlinuz-//')"
    chroot "$tree" dpkg-query -W -f '${Package} ${Version}\n' cloud-init
  } >"$tree/.kubevirt-imds-vm"
}

# build_image TREE OUT: kernel, initramfs and the qcow2 disk into OUT.
build_image() {
  local tree=$1 out=$2
  cp "$(readlink -f "$tree/vmlinuz")" "$out/vmlinuz"
  cp "$(readlink -f "$tree/initrd.img")" "$out/initrd.img"
  mv "$tree/.kubevirt-imds-vm" "$out/manifest"
  # A sparse 4 GiB disk: room for what tests install; qcow2 stores only what is used.
  truncate -s 4G "$out/disk.raw"
  mkfs.ext4 -q -F -L root -d "$tree" "$out/disk.raw"
  qemu-img convert -O qcow2 "$out/disk.raw" "$out/disk.qcow2"
  rm -f "$out/disk.raw"
}

if [[ $(id -u) != 0 ]]; then
  log "needs root (debootstrap, chroot)"
  exit 1
fi

# The cache key: the recipe as bash prints it (comments dropped, so editing
# prose rebuilds nothing), with the suite and its packages.
key=$({ echo "$suite"; echo "$packages"; declare -f build_tree build_image; } | sha256sum | cut -c1-12)
dir=$base/$suite-$key
if [[ -f $dir/disk.qcow2 ]]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$base"
# Parallel test processes may ask for the image: one builds, the others wait.
exec {lock}>"$dir.lock"
flock "$lock"
if [[ ! -f $dir/disk.qcow2 ]]; then
  need debootstrap debootstrap
  need mkfs.ext4 e2fsprogs
  need qemu-img qemu-utils
  start=$SECONDS
  log "building $suite into $dir (minutes on a busy machine)"
  discard "$dir.tmp"
  mkdir -p "$dir.tmp/out"
  trap 'discard "'"$dir.tmp"'"' EXIT
  build_tree "$dir.tmp/root"
  log "packages installed after $((SECONDS - start))s"
  build_image "$dir.tmp/root" "$dir.tmp/out"
  discard "$dir"
  mv "$dir.tmp/out" "$dir"
  discard "$dir.tmp"
  trap - EXIT
  log "built $suite in $((SECONDS - start))s ($(du -sh "$dir/disk.qcow2" | cut -f1) qcow2): $(tr '\n' ';' <"$dir/manifest")"
  discard_others "$base/$suite" "$dir"
fi
exec {lock}>&-
echo "$dir"
