# shellcheck shell=bash
# Helpers that hack/guest-rootfs.sh and hack/guest-vm-image.sh source. Their
# cache keys hash only their own recipe functions (declare -f), never these,
# so editing this file rebuilds no guest tree or VM image.

# mirror prints the Debian mirror to fetch packages from (hack/debian-mirror.sh).
mirror() { "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh"; }

# discard DIR: removes a build, first unmounting whatever an interrupted build
# left mounted in it, and never crossing into another file system.
discard() {
  local mnt
  [[ -e $1 ]] || return 0
  findmnt -rn -o TARGET | { grep -F "$1/" || true; } | sort -r | while read -r mnt; do umount -l "$mnt"; done
  rm -rf --one-file-system "$1"
}

# discard_others PREFIX KEEP: removes every PREFIX-* but KEEP and its lock,
# the builds of older recipes: dead weight of hundreds of MB each.
discard_others() {
  local old
  for old in "$1"-*; do
    case $old in
    "$2" | "$2.lock") ;;
    *) discard "$old" ;;
    esac
  done
}
