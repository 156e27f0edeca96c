#!/usr/bin/env bash
# Builds the Debian guest root trees that test/guest runs real cloud-init in, and
# prints their paths, one line per requested generation, in the order asked:
#
#   hack/guest-rootfs.sh [bookworm] [trixie]     (no argument: both)
#
#   bookworm  cloud-init 22.4, renders ENI and brings networking up with ifupdown/dhclient
#   trixie    cloud-init 25.x, renders netplan v2 and applies it with systemd-networkd
#
# Each tree is a `debootstrap --variant=minbase` root with the generation's packages
# installed by apt inside it (debootstrap --include=cloud-init fails on a virtual
# dependency). Trees live in a cache outside the work tree,
# ${KUBEVIRT_IMDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-imds}/guests/<name>-<key>,
# where <key> hashes the generation's recipe (suite, packages and the build steps below),
# so a changed recipe builds a new tree and an unchanged one is reused across clones.
# The trees are never modified after the build: test/guest runs every guest on a
# fresh overlay.
#
# The Debian mirror is taken from $KUBEVIRT_IMDS_DEBIAN_MIRROR, else from the host's apt
# sources (the first entry whose path ends in /debian). Needs root; installs debootstrap
# with apt when it is missing.
#
# Measured cold (nothing cached, every package fetched) on a 2-core machine that other
# builds kept busy (load average 6-16):
#   bookworm  debootstrap 151 s + apt install 114 s = 265 s (also 234 s and 371 s), 241 MB
#   trixie    debootstrap 116 s + apt install  92 s = 208 s (496 s at load 16), 281 MB
# An idle machine needs well under a minute each (shared notes: 36 s + 12 s for bookworm).
# A warm call (trees present) returns at once.
set -euo pipefail

cache=${KUBEVIRT_IMDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-imds}
log() { echo "guest-rootfs: $*" >&2; }

# Packages installed inside each generation's tree.
# bookworm: ifupdown + isc-dhcp-client are what cloud-init's ENI renderer drives;
#   net-tools because ENI `post-up route ...` lines need it.
# trixie: netplan.io renders v2 config for systemd-networkd (in the systemd package);
#   no init system runs in a test guest, so test/guest starts systemd-networkd itself.
#   cloud-init pulls in dhcpcd-base for its ephemeral DHCP; curl is what the sample
#   user-data fetches the guest's token with, as on Ubuntu and Debian cloud images.
# shellcheck disable=SC2034 # read indirectly, as ${!pkgs}
packages_bookworm="cloud-init ifupdown iproute2 netbase isc-dhcp-client net-tools"
# shellcheck disable=SC2034
packages_trixie="cloud-init netplan.io systemd iproute2 netbase curl ca-certificates"

# shellcheck source=hack/guest-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

# build_tree NAME DIR: the recipe. Its text (as bash prints it, without comments) is
# part of the cache key, so changing a step rebuilds the trees.
build_tree() {
  local name=$1 dir=$2 pkgs
  pkgs=packages_$name
  debootstrap --variant=minbase "$name" "$dir" "$(mirror)" >&2
  log "$name: debootstrap done after $((SECONDS - start))s"
  # Packages are fetched through the host's resolver; the finished tree points at
  # loopback so a guest never sends a DNS query out of its namespace.
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  # No daemon may start inside the build chroot.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 755 "$dir/usr/sbin/policy-rc.d"
  mount -t proc proc "$dir/proc"
  trap 'umount "'"$dir"'/proc" 2>/dev/null || true' EXIT
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get update -q >&2
  # shellcheck disable=SC2086 # the package list is meant to split
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
    apt-get install -y -q --no-install-recommends ${!pkgs} >&2
  chroot "$dir" apt-get clean
  umount "$dir/proc"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir/usr/sbin/policy-rc.d"
  echo 'nameserver 127.0.0.1' >"$dir/etc/resolv.conf"
  # A record of what the tree holds, read by test/guest for its reports.
  # shellcheck disable=SC2016 # dpkg-query's own format fields
  chroot "$dir" dpkg-query -W -f '${Package} ${Version}\n' cloud-init >"$dir/.kubevirt-imds-guest"
}

key_of() {
  local pkgs=packages_$1
  { echo "$1"; echo "${!pkgs}"; declare -f build_tree; } | sha256sum | cut -c1-12
}

build() {
  local name=$1 dir start
  dir="$cache/guests/$name-$(key_of "$name")"
  if [[ -f $dir/.kubevirt-imds-guest ]]; then
    echo "$dir"
    return
  fi
  mkdir -p "$cache/guests"
  # Parallel test processes may ask for the same tree: one builds, the others wait.
  exec {lock}>"$dir.lock"
  flock "$lock"
  if [[ ! -f $dir/.kubevirt-imds-guest ]]; then
    if ! command -v debootstrap >/dev/null; then
      log "installing debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
    fi
    start=$SECONDS
    log "building $name into $dir (minutes on a busy machine)"
    discard "$dir.tmp"
    build_tree "$name" "$dir.tmp"
    discard "$dir"
    mv "$dir.tmp" "$dir"
    log "built $name in $((SECONDS - start))s ($(du -sh "$dir" | cut -f1)): $(cat "$dir/.kubevirt-imds-guest")"
    discard_others "$cache/guests/$name" "$dir"
  fi
  exec {lock}>&-
  echo "$dir"
}

if [[ $(id -u) != 0 ]]; then
  log "needs root (debootstrap, chroot)"
  exit 1
fi
(($# > 0)) || set -- bookworm trixie
for name in "$@"; do
  case $name in
  bookworm | trixie) build "$name" ;;
  *)
    log "unknown generation $name (want bookworm or trixie)"
    exit 2
    ;;
  esac
done
