#!/usr/bin/env bash
# Installs the Debian packages the tests use, when missing: network namespace
# tooling for the sidecar tests (nft for KubeVirt's masquerade rules), dnsmasq
# to stand in for KubeVirt's in-pod DHCP, debootstrap for the real cloud-init guests, qemu for the VM guests
# (test/vm), curl/setpriv for checks from inside namespaces, openssl for the
# identity document checks, and the AWS clients the EC2 dialect is tested
# with (amazon-ec2-utils' ec2-metadata, python3-botocore). Needs root;
# without root it only reports.
set -euo pipefail

# command → package
declare -A need=(
  [ip]=iproute2
  [bridge]=iproute2
  [nft]=nftables
  [dnsmasq]=dnsmasq-base
  [debootstrap]=debootstrap
  [curl]=curl
  [setpriv]=util-linux
  [unshare]=util-linux
  [mkfs.ext4]=e2fsprogs
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [sysctl]=procps
  [mount]=mount
  [openssl]=openssl
  [ec2-metadata]=amazon-ec2-utils
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# Debian's botocore, for Debian's python3 (not one on PATH from elsewhere).
/usr/bin/python3 -c 'import botocore' >/dev/null 2>&1 || missing+=(python3-botocore)
[[ ${#missing[@]} -eq 0 ]] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) -ne 0 ]]; then
  echo "install-test-deps: missing ${missing[*]}; the tests that need them will skip (run as root to install)" >&2
  exit 0
fi
echo "install-test-deps: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
