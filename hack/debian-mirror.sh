#!/usr/bin/env bash
# Prints the Debian mirror the guest builds (guest-rootfs.sh, guest-vm-image.sh)
# fetch packages from: $KUBEVIRT_IMDS_DEBIAN_MIRROR, else the first entry of the
# host's apt sources whose path ends in /debian.
set -euo pipefail
if [[ -n ${KUBEVIRT_IMDS_DEBIAN_MIRROR:-} ]]; then
  echo "$KUBEVIRT_IMDS_DEBIAN_MIRROR"
  exit 0
fi
m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  grep -v '^[[:space:]]*#' | grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | head -n1 | tr -d ' ' || true)
if [[ -z $m ]]; then
  echo "debian-mirror: no Debian mirror found in the apt sources; set KUBEVIRT_IMDS_DEBIAN_MIRROR" >&2
  exit 1
fi
echo "${m%/}"
