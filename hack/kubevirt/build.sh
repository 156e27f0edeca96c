#!/usr/bin/env bash
# Builds KubeVirt v1.8.0's components from the published kubevirt.io/kubevirt module
# and packs them as docker-format image tarballs under the names virt-operator v1.8.0
# renders, without a registry, a container engine or any download besides the Go
# module proxy and the Debian archive. Prints the directory that holds the result:
#
#   <dir>/images.txt        one line per image: "<name:tag> <tarball path>"
#   <dir>/images/*.tar      the tarballs (`ctr -n k8s.io images import` reads them)
#   <dir>/bin/              the binaries
#   <dir>/manifests/        kubevirt-operator.yaml and kubevirt-cr.yaml, the release
#                           manifests as upstream renders them (tools/manifest-templator)
#   <dir>/timings.txt       seconds per step of the run that built each piece
#
#   hack/kubevirt/build.sh            build what is missing, print the directory
#   hack/kubevirt/build.sh --rebuild  rebuild binaries and images (trees and the Go
#                                     build cache are kept): measures warm timings
#   hack/kubevirt/build.sh --paths    print where each piece is (or would be) cached
#
# Image names: virt-operator derives every other image from its own image name
# (VIRT_OPERATOR_IMAGE, regex ^(.*)/(.*)virt-operator([@:].*)?$ -> registry, prefix,
# tag) as <registry>/<prefix><component>:<tag>. Upstream's manifest runs it as
# quay.io/kubevirt/virt-operator:v1.8.0 with KUBEVIRT_VERSION=v1.8.0, so the images
# are quay.io/kubevirt/virt-api:v1.8.0 and so on ($KUBEVIRT_IMAGE_REGISTRY overrides
# the registry part). See docs/kubevirt-build.md.
#
# Pieces, each cached under ${KUBEVIRT_IMDS_CACHE:-~/.cache/kubevirt-imds}/kubevirt/
# and keyed by what goes into it, so an unchanged input is never rebuilt:
#   trees/trixie-minbase-<k>   debootstrap --variant=minbase trixie
#   trees/trixie-builder-<k>   + gcc, libvirt-dev, libnbd-dev: virt-launcher links
#                              against libvirt 11.3 and libnbd 1.22 (bookworm's 1.14
#                              lacks the 64-bit extent API virt-launcher uses)
#   trees/trixie-launcher-<k>  virt-launcher's runtime (libvirt, qemu, ...)
#   trees/trixie-handler-<k>   virt-handler's runtime (qemu-img, nftables, ...)
#   libnbd-go-<k>              libnbd's Go bindings from Debian's source package
#   bin-v1.8.0-<k>             the binaries (keyed by the build module and flags)
#   v1.8.0-<k>                 the images (keyed by all of the above)
# Needs root (debootstrap, chroot, unshare, setcap).
# shellcheck disable=SC2317 # recipe functions are called through cached_dir/build_binary
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
version=v1.8.0
suite=trixie
registry=${KUBEVIRT_IMAGE_REGISTRY:-quay.io/kubevirt}
cache=${KUBEVIRT_IMDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-imds}/kubevirt
buildmod=$root/hack/tools/kubevirt-build/kubevirt
imagemod=$root/hack/tools/kubevirt-build/image
patches=$root/hack/kubevirt/patches
rebuild=false paths_only=false
case ${1:-} in
--rebuild) rebuild=true ;;
--paths) paths_only=true ;;
"") ;;
*) echo "usage: $0 [--rebuild|--paths]" >&2; exit 2 ;;
esac

log() { echo "kubevirt-build: $*" >&2; }
die() { log "$*"; exit 1; }
hash12() { sha256sum | cut -c1-12; }

# mirror prints the Debian mirror: $KUBEVIRT_IMDS_DEBIAN_MIRROR or the host's apt source.
mirror() { "$root/hack/debian-mirror.sh"; }

# in_tree DIR CMD...: runs CMD chrooted in DIR with /proc mounted, in a private mount
# namespace so that no mount outlives the command, whatever way it ends.
in_tree() {
  local dir=$1
  shift
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --propagation private -- sh -c '
    dir=$1; shift
    mount -t proc proc "$dir/proc"
    exec chroot "$dir" env -i HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' sh "$dir" "$@"
}

# ---------------------------------------------------------------------------------
# Debian trixie trees
# ---------------------------------------------------------------------------------

# Packages of each tree, installed with --no-install-recommends (read as ${!pkgs}).
# shellcheck disable=SC2034
# builder: what cgo needs to compile and link virt-launcher.
pkgs_builder="gcc libc6-dev pkg-config libvirt-dev libnbd-dev"
# launcher: Debian's counterparts of upstream's launcherbase RPMs (hack/rpm-deps.sh:
#   libvirt-client, libvirt-daemon-driver-qemu, passt, qemu-kvm-core, swtpm-tools,
#   edk2-ovmf, seabios, findutils, nftables, nmap-ncat, procps-ng, tar, virtiofsd,
#   xorriso, libnbd). libvirt-daemon holds libvirtd (Debian builds no virtqemud) and
#   libvirt-daemon-log holds virtlogd; libnbd0 is what virt-launcher links against.
# shellcheck disable=SC2034
pkgs_launcher="libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-log libvirt-clients \
qemu-system-x86 qemu-utils ovmf seabios passt swtpm-tools virtiofsd xorriso libnbd0 \
nftables procps findutils tar netcat-openbsd"
# handler: upstream's handlerbase (qemu-img, findutils, iproute, nftables, procps-ng,
#   tar, util-linux, xorriso).
# shellcheck disable=SC2034
pkgs_handler="qemu-utils iproute2 nftables procps findutils tar util-linux xorriso"

# build_minbase DIR: the common start of every tree. debootstrap --include of the
# libvirt packages fails on trixie's systemd pre-dependency with bookworm's
# debootstrap, so packages go in with apt afterwards.
build_minbase() {
  local dir=$1
  debootstrap --variant=minbase "$suite" "$dir" "$(mirror)" >&2
}

# build_tree NAME DIR MINBASE: a copy of the minbase tree with NAME's packages.
build_tree() {
  local name=$1 dir=$2 minbase=$3 pkgs
  pkgs=pkgs_$name
  cp -a "$minbase" "$dir"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  # No daemon may start inside the build chroot.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 755 "$dir/usr/sbin/policy-rc.d"
  # KubeVirt runs qemu as qemu:qemu = 107:107 (its images' passwd). Created before
  # any package so that no package's system user takes 107.
  if [[ $name != builder ]]; then
    in_tree "$dir" groupadd -g 107 qemu
    in_tree "$dir" useradd -u 107 -g 107 -d /home/qemu -m -s /bin/bash qemu
  fi
  in_tree "$dir" apt-get update -q >&2
  # shellcheck disable=SC2086 # the package list is meant to split
  in_tree "$dir" apt-get install -y -q --no-install-recommends ${!pkgs} >&2
  in_tree "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/* "$dir/usr/sbin/policy-rc.d"
  case $name in
  builder) mkdir -p "$dir/usr/local/go" "$dir/gomod" "$dir/gocache" "$dir/src" "$dir/out" ;;
  launcher) finish_launcher_tree "$dir" ;;
  handler) finish_handler_tree "$dir" ;;
  esac
  # shellcheck disable=SC2016 # dpkg-query's own format fields
  in_tree "$dir" dpkg-query -W -f '${Package} ${Version}\n' >"$dir/.kubevirt-build-packages"
}

# finish_launcher_tree DIR: what upstream's launcher image adds around its RPMs
# (cmd/virt-launcher/BUILD.bazel), made right for Debian.
finish_launcher_tree() {
  local dir=$1 src=$kvsrc/cmd/virt-launcher
  install -m 0644 "$src/qemu.conf" "$src/virtqemud.conf" "$dir/etc/libvirt/"
  install -m 0644 "$src/nsswitch.conf" "$dir/etc/nsswitch.conf"
  install -d -m 0755 "$dir/etc/libvirt/hooks"
  install -m 0755 -o 107 -g 107 "$src/qemu" "$dir/etc/libvirt/hooks/qemu"
  install -d -m 0755 "$dir/usr/lib64/qemu-kvm"
  # virt-handler reads the launcher's sockets through /proc/<pid>/root/var/run: an
  # absolute link would resolve against virt-handler's own root. Debian's is absolute.
  rm -rf "$dir/var/run"
  ln -s ../run "$dir/var/run"
  # virt-launcher execs /usr/sbin/virtqemud -f /var/run/libvirt/virtqemud.conf and
  # connects to virtqemud-sock; Debian builds only the monolithic libvirtd, which
  # takes the same -f and serves the qemu driver on libvirt-sock.
  if [[ ! -e $dir/usr/sbin/virtqemud ]]; then
    cat >"$dir/usr/sbin/virtqemud" <<'EOF'
#!/bin/sh
# Debian ships no virtqemud: run the monolithic libvirtd in its place and give its
# socket the name virt-launcher connects to.
mkdir -p /var/run/libvirt
ln -sf libvirt-sock /var/run/libvirt/virtqemud-sock
exec /usr/sbin/libvirtd "$@"
EOF
    chmod 0755 "$dir/usr/sbin/virtqemud"
  fi
  echo "$version" >"$dir/.version"
}

# finish_handler_tree DIR: upstream's handler image has root and qemu (107) in its
# passwd and KubeVirt's nsswitch.conf.
finish_handler_tree() {
  local dir=$1
  install -m 0644 "$kvsrc/cmd/virt-handler/nsswitch.conf" "$dir/etc/nsswitch.conf"
  echo "$version" >"$dir/.version"
}

# cached_dir KIND PATH BUILDER ARGS...: runs BUILDER into PATH.tmp unless PATH exists,
# then renames it; records the time taken.
cached_dir() {
  local kind=$1 path=$2 start
  shift 2
  if [[ -e $path ]]; then
    timing "$kind" cached 0
    return
  fi
  log "$kind: building $path"
  start=$SECONDS
  rm -rf "$path.tmp"
  "$@" "$path.tmp"
  mv "$path.tmp" "$path"
  timing "$kind" built $((SECONDS - start))
}

# tree_key PKGVAR FUNCTION...: hashes a tree's recipe: suite, package list and the
# functions that make it (so a change to the launcher's finish rebuilds only it).
tree_key() {
  local pkgs=$1
  shift
  { echo "$suite"; echo "${!pkgs:-}"; declare -f build_minbase "$@"; } | hash12
}

build_tree_from() { build_tree "$1" "$2" "$minbase"; }

# ---------------------------------------------------------------------------------
# libnbd's Go bindings
# ---------------------------------------------------------------------------------

# build_libnbd_go DIR: libguestfs.org/libnbd is refused by the module proxy; Debian's
# libnbd source package carries the same bindings (golang/). Both libvirt-go and the
# bindings define a C function freeCallbackId, which breaks linking virt-launcher:
# the bindings' copy is renamed.
build_libnbd_go() {
  local out=$1 tmp
  tmp=$out.src
  rm -rf "$tmp"
  cp -a "$builder" "$tmp"
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  echo "deb-src $(mirror) $suite main" >>"$tmp/etc/apt/sources.list"
  in_tree "$tmp" apt-get update -q >&2
  mkdir -p "$tmp/srcpkg"
  in_tree "$tmp" sh -c 'cd /srcpkg && apt-get source --download-only -q libnbd' >&2
  mkdir -p "$out"
  tar -xzf "$tmp"/srcpkg/libnbd_*.orig.tar.gz -C "$out" --strip-components=2 --wildcards '*/golang/*'
  (cd "$tmp/srcpkg" && echo libnbd_*.dsc) >"$out/.debian-source"
  rm -rf "$tmp"
  rm -rf "$out/examples" "$out"/*_test.go "$out/configure"
  sed -i 's/\bfreeCallbackId\b/libnbd_freeCallbackId/g' "$out"/*.go "$out"/*.h
  grep -q "^func libnbd_freeCallbackId" "$out/callbacks.go" || die "libnbd bindings: freeCallbackId not found to rename"
}

# ---------------------------------------------------------------------------------
# Binaries
# ---------------------------------------------------------------------------------

# The version stamp upstream's Bazel puts in (kubevirt.io/client-go/version).
ldflags="-s -w -X kubevirt.io/client-go/version.gitVersion=$version \
 -X kubevirt.io/client-go/version.gitTreeState=clean \
 -X kubevirt.io/client-go/version.buildDate=1970-01-01T00:00:00Z"

# Built on the host with cgo (runc's userns code, <linux/kvm.h> in virt-handler's
# node labeller); name and package. virt-controller first: it is by far the longest
# and shares most of its dependencies with the rest.
host_binaries=(
  "virt-controller kubevirt.io/kubevirt/cmd/virt-controller"
  "virt-api kubevirt.io/kubevirt/cmd/virt-api"
  "virt-operator kubevirt.io/kubevirt/cmd/virt-operator"
  "csv-generator kubevirt.io/kubevirt/tools/csv-generator"
  "virt-handler kubevirt.io/kubevirt/cmd/virt-handler"
  "virt-chroot kubevirt.io/kubevirt/cmd/virt-chroot"
  "virt-exportproxy kubevirt.io/kubevirt/cmd/virt-exportproxy"
  "virt-exportserver kubevirt.io/kubevirt/cmd/virt-exportserver"
  "synchronization-controller kubevirt.io/kubevirt/cmd/synchronization-controller"
  "virt-launcher-monitor kubevirt.io/kubevirt/cmd/virt-launcher-monitor"
  "virt-tail kubevirt.io/kubevirt/cmd/virt-tail"
  "virt-freezer kubevirt.io/kubevirt/cmd/virt-freezer"
  "virt-probe kubevirt.io/kubevirt/cmd/virt-probe"
  "libvirt-hook-client kubevirt.io/kubevirt/cmd/virt-launcher/libvirt-hook-client"
)

# prepare_source DIR: the build module plus the libnbd bindings beside it.
prepare_source() {
  local dir=$1
  mkdir -p "$dir"
  cp "$buildmod/go.mod" "$buildmod/go.sum" "$dir/"
  rm -rf "$dir/libnbd"
  cp -a "$libnbd_go" "$dir/libnbd"
  # Fetch every module the tools need now: the launcher build in the chroot is offline.
  # With cgo, as they are built: libnbd's bindings have no file without it (and
  # the Makefile, which runs this script, exports CGO_ENABLED=0 for its own builds).
  (cd "$dir" && CGO_ENABLED=1 go list -deps tool >/dev/null)
}

build_host_binary() {
  local name=$1 pkg=$2
  (cd "$src" && CGO_ENABLED=1 go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
}

# build_launcher: virt-launcher links libvirt and libnbd, so it is built inside the
# trixie builder tree, with the host's Go toolchain, module cache and build cache bound
# in. Sharing the build cache is safe: Go keys every cgo step by the C compiler's
# identity, and the tree's gcc 14 is not the host's gcc 12; the pure-Go packages
# (nearly all of them) are then compiled once for both.
build_launcher() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --propagation private -- sh -c '
    set -e
    tree=$1
    mount --bind -o ro "$2" "$tree/usr/local/go"
    mount --bind "$3" "$tree/gomod"
    mount --bind "$4" "$tree/gocache"
    mount --bind "$5" "$tree/src"
    mount --bind "$6" "$tree/out"
    mount -t proc proc "$tree/proc"
    exec chroot "$tree" env -i HOME=/root LC_ALL=C PATH=/usr/local/go/bin:/usr/bin:/bin \
      GOMODCACHE=/gomod GOCACHE=/gocache GOPROXY=off GOFLAGS="-mod=readonly -buildvcs=false" \
      GOTOOLCHAIN=local CGO_ENABLED=1 \
      sh -c "cd /src && go build -trimpath -ldflags \"$7\" -o /out/virt-launcher.tmp kubevirt.io/kubevirt/cmd/virt-launcher"
  ' sh "$builder" "$(go env GOROOT)" "$(go env GOMODCACHE)" "$(go env GOCACHE)" "$src" "$bin" "$ldflags"
  mv "$bin/virt-launcher.tmp" "$bin/virt-launcher"
}

# build_container_disk: cmd/container-disk-v2alpha is C, linked statically (it runs in
# every containerDisk image, whatever that image holds), as upstream's BUILD does.
build_container_disk() {
  gcc -static -O2 -o "$bin/container-disk.tmp" "$kvsrc/cmd/container-disk-v2alpha/main.c"
  mv "$bin/container-disk.tmp" "$bin/container-disk"
}

# patch_source: the kubevirt.io/kubevirt module, copied beside the build module
# with hack/kubevirt/patches/*.patch applied, replaces the published one. Each
# patch is a fix KubeVirt merged after v1.8.0 without which a VM cannot start
# here; each says which. (go build -overlay may not touch the module cache.)
# With -trimpath the copy's directory is not part of
# the build cache's keys, so only the patched packages and their dependants
# are compiled again.
patch_source() {
  rm -rf "$src/kubevirt"
  cp -a "$kvsrc" "$src/kubevirt"
  chmod -R u+w "$src/kubevirt"
  local p
  for p in "$patches"/*.patch; do
    patch -p1 -s -d "$src/kubevirt" <"$p" || die "applying $p"
  done
  (cd "$src" && go mod edit -replace kubevirt.io/kubevirt=./kubevirt)
}

bin_key() {
  {
    echo "$version"
    cat "$patches"/*.patch
    go version
    cat "$buildmod/go.mod" "$buildmod/go.sum"
    echo "$libnbd_go" "$builder"
    echo "$ldflags" "${host_binaries[*]}"
    declare -f prepare_source build_host_binary build_launcher build_container_disk patch_source
  } | hash12
}

# prepare_binaries: each binary is built once into bin-<key>/, which a failed run
# leaves in place so the next run goes on from there.
prepare_binaries() {
  bin=$cache/bin-$version-$(bin_key)
  src=$bin.src
  $rebuild && rm -rf "$bin" "$src"
  mkdir -p "$bin"
  [[ -d $src/libnbd ]] || prepare_source "$src"
  [[ -d $src/kubevirt ]] || patch_source
}

# build_binary NAME BUILDER ARGS...: unless bin/NAME exists.
build_binary() {
  local name=$1 start
  shift
  if [[ -x $bin/$name ]]; then
    timing "bin:$name" cached 0
    return
  fi
  log "building $name"
  start=$SECONDS
  "$@"
  timing "bin:$name" built $((SECONDS - start))
}

build_host_binaries() {
  local entry name pkg
  for entry in "${host_binaries[@]}"; do
    read -r name pkg <<<"$entry"
    build_binary "$name" build_host_binary "$name" "$pkg"
  done
}

# ---------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------

# layer_tar DIR OUT: DIR's content as a layer tarball, owners numeric, with file
# capabilities (virt-launcher-monitor's cap_net_bind_service) as SCHILY.xattr records.
# /proc, /sys and /dev stay empty: the runtime mounts them.
# Sorted names, a fixed mtime and PAX headers without atime, ctime or tar's PID make
# the layer (and so the image digest) a function of the content alone.
layer_tar() {
  local dir=$1 out=$2
  tar --numeric-owner --xattrs --xattrs-include=security.capability \
    --sort=name --mtime=@0 --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
    -C "$dir" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
}

# tree_layer TREE: the tree's layer tarball, cached beside the tree (a tree never
# changes after its build) under a name keyed by layer_tar's recipe.
tree_layer() {
  local path
  path=$1.layer-$(declare -f layer_tar | hash12).tar
  if [[ ! -f $path ]]; then
    rm -f "$1".layer*.tar
    layer_tar "$1" "$path"
  fi
  echo "$path"
}

# stage_base DIR BINARY...: a distroless-like base (upstream uses
# gcr.io/distroless/base-debian12): the shared libraries the cgo binaries load, CA
# certificates, /tmp, and passwd/group with upstream's nonroot-user 1001.
stage_base() {
  local dir=$1 lib
  shift
  mkdir -p "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot-user"
  chmod 1777 "$dir/tmp"
  chown 1001:1001 "$dir/home/nonroot-user"
  for lib in $(ldd "$@" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
    cp -L --parents "$lib" "$dir/"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot-user:x:1001:1001::/home/nonroot-user:/bin/bash\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot-user:x:1001:\n' >"$dir/etc/group"
  echo "$version" >"$dir/.version"
}

# stage_bins DIR NAME...: the named binaries at /usr/bin.
stage_bins() {
  local dir=$1 name
  shift
  mkdir -p "$dir/usr/bin"
  for name in "$@"; do install -m 0755 "$bin/$name" "$dir/usr/bin/$name"; done
}

# pack IMAGE USER ENTRYPOINT LAYER...: writes images/IMAGE.tar and its manifest line.
pack() {
  local image=$1 user=$2 entrypoint=$3 ref
  shift 3
  ref=$registry/$image:$version
  "$kvimage" -name "$ref" -out "$out/images/$image.tar" -user "$user" -entrypoint "$entrypoint" "$@" >&2
  echo "$ref $out/images/$image.tar" >>"$out/images.txt.tmp"
}

# build_images: one image per component virt-operator deploys by default, plus
# virt-operator itself. Not built: libguestfs-tools, pr-helper, sidecar-shim and the
# virt-template images (opt-in features).
build_images() {
  local stage=$out/stage layers=$out/layers image start launcher_layer handler_layer
  rm -rf "$stage" "$layers" "$out/images.txt.tmp"
  mkdir -p "$stage" "$layers" "$out/images"
  start=$SECONDS
  stage_base "$stage/base" "$bin/virt-operator" "$bin/virt-api" "$bin/virt-controller" \
    "$bin/virt-exportproxy" "$bin/virt-exportserver" "$bin/synchronization-controller" "$bin/csv-generator"
  layer_tar "$stage/base" "$layers/base.tar"
  launcher_layer=$(tree_layer "$launcher")
  handler_layer=$(tree_layer "$handler")
  timing "layers:bases" built $((SECONDS - start))

  declare -A bins=(
    [virt-operator]="virt-operator csv-generator"
    [virt-api]=virt-api
    [virt-controller]=virt-controller
    [virt-exportproxy]=virt-exportproxy
    [virt-exportserver]=virt-exportserver
    [virt-synchronization-controller]=synchronization-controller
  )
  for image in virt-operator virt-api virt-controller virt-exportproxy virt-exportserver virt-synchronization-controller; do
    start=$SECONDS
    # shellcheck disable=SC2086 # the binary list is meant to split
    stage_bins "$stage/$image" ${bins[$image]}
    layer_tar "$stage/$image" "$layers/$image.tar"
    pack "$image" 1001 "/usr/bin/${bins[$image]%% *}" "$layers/base.tar" "$layers/$image.tar"
    timing "image:$image" built $((SECONDS - start))
  done

  start=$SECONDS
  stage_bins "$stage/virt-handler" virt-handler virt-chroot
  layer_tar "$stage/virt-handler" "$layers/virt-handler.tar"
  pack virt-handler "" /usr/bin/virt-handler "$handler_layer" "$layers/virt-handler.tar"
  timing image:virt-handler built $((SECONDS - start))

  start=$SECONDS
  stage_bins "$stage/virt-launcher" virt-launcher virt-launcher-monitor virt-tail virt-freezer \
    virt-probe container-disk libvirt-hook-client
  install -m 0755 "$kvsrc/cmd/virt-launcher/node-labeller/node-labeller.sh" "$stage/virt-launcher/usr/bin/"
  # virt-launcher looks for OVMF_CODE.fd / OVMF_VARS.fd (and .secboot.fd) under
  # /usr/share/OVMF; Debian's ovmf ships only the 4M builds under other names.
  mkdir -p "$stage/virt-launcher/usr/share/OVMF"
  ln -s OVMF_CODE_4M.fd "$stage/virt-launcher/usr/share/OVMF/OVMF_CODE.fd"
  ln -s OVMF_VARS_4M.fd "$stage/virt-launcher/usr/share/OVMF/OVMF_VARS.fd"
  ln -s OVMF_CODE_4M.secboot.fd "$stage/virt-launcher/usr/share/OVMF/OVMF_CODE.secboot.fd"
  ln -s OVMF_VARS_4M.ms.fd "$stage/virt-launcher/usr/share/OVMF/OVMF_VARS.secboot.fd"
  # Without it virt-launcher (uid 107) cannot exec virtqemud: "operation not permitted".
  setcap cap_net_bind_service+ep "$stage/virt-launcher/usr/bin/virt-launcher-monitor"
  layer_tar "$stage/virt-launcher" "$layers/virt-launcher.tar"
  pack virt-launcher "" /usr/bin/virt-launcher "$launcher_layer" "$layers/virt-launcher.tar"
  timing image:virt-launcher built $((SECONDS - start))

  rm -rf "$stage" "$layers"
  mv "$out/images.txt.tmp" "$out/images.txt"
}

# build_templator: tools/manifest-templator, the tool upstream's build-manifests.sh
# renders the release manifests with. It is pure Go, but built with cgo like
# the other binaries: with cgo off, net and everything above it get other
# cache keys, and a cold build compiled KubeVirt's dependencies a second time
# for it (322 s).
build_templator() {
  (cd "$src" && CGO_ENABLED=1 go build -trimpath -o "$bin/manifest-templator.tmp" kubevirt.io/kubevirt/tools/manifest-templator)
  mv "$bin/manifest-templator.tmp" "$bin/manifest-templator"
}

# render_manifests: kubevirt-operator.yaml and kubevirt-cr.yaml as upstream's
# hack/build-manifests.sh renders them for a release (namespace kubevirt, images
# $registry/*:$version, pull policy IfNotPresent): first the file includes, then
# the variables.
render_manifests() {
  local m=$out/manifests name vars
  build_binary manifest-templator build_templator
  rm -rf "$m.tmp"
  mkdir -p "$m.tmp"
  vars=(--process-vars --namespace=kubevirt --container-prefix="$registry" --container-tag="$version"
    --csv-version="${version#v}" --image-pull-policy=IfNotPresent --verbosity=2
    --kubevirt-logo-path="$kvsrc/assets/kubevirt_logo.png")
  for name in kubevirt-operator kubevirt-cr; do
    "$bin/manifest-templator" --process-files --generated-manifests-dir="$kvsrc/manifests/generated/" \
      --input-file="$kvsrc/manifests/release/$name.yaml.in" >"$m.tmp/$name.yaml.in"
    "$bin/manifest-templator" "${vars[@]}" --input-file="$m.tmp/$name.yaml.in" >"$m.tmp/$name.yaml"
    rm "$m.tmp/$name.yaml.in"
  done
  rm -rf "$m"
  mv "$m.tmp" "$m"
}

# prune PREFIX KEEP: removes PREFIX-* entries that do not belong to KEEP (KEEP itself,
# KEEP.lock, KEEP.src, KEEP.layer-*): builds of older recipes, hundreds of MB each.
prune() {
  local old
  for old in "$1"-*; do
    [[ -e $old && $old != "$2"* ]] || continue
    log "removing superseded $old"
    rm -rf --one-file-system "$old"
  done
}

prune_superseded() {
  prune "$cache/$version" "$out"
  prune "$cache/bin-$version" "$bin"
  prune "$cache/libnbd-go" "$libnbd_go"
  prune "$cache/trees/$suite-minbase" "$minbase"
  prune "$cache/trees/$suite-builder" "$builder"
  prune "$cache/trees/$suite-launcher" "$launcher"
  prune "$cache/trees/$suite-handler" "$handler"
  # Older recipes built virt-launcher with a Go build cache of its own.
  rm -rf --one-file-system "$cache/go-build-$suite"
}

# ---------------------------------------------------------------------------------

timing() {
  printf '%-40s %-6s %5ss\n' "$1" "$2" "$3" >>"$timings"
  log "$1: $2 in $3s"
}

main() {
  [[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, unshare, setcap)"
  mkdir -p "$cache"
  kvsrc=$(cd "$buildmod" && go mod download -json kubevirt.io/kubevirt@"$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -d $kvsrc ]] || die "kubevirt.io/kubevirt@$version not in the module cache"
  # Trees' keys are computed before anything else so the final key covers them.
  minbase=$cache/trees/$suite-minbase-$(tree_key none)
  builder=$cache/trees/$suite-builder-$(tree_key pkgs_builder build_tree)
  launcher=$cache/trees/$suite-launcher-$(tree_key pkgs_launcher build_tree finish_launcher_tree)
  handler=$cache/trees/$suite-handler-$(tree_key pkgs_handler build_tree finish_handler_tree)
  libnbd_go=$cache/libnbd-go-$( { echo "$builder"; declare -f build_libnbd_go; } | hash12)
  local key
  key=$( {
    bin_key
    echo "$minbase $launcher $handler $registry"
    cat "$imagemod/go.mod" "$imagemod/go.sum" "$imagemod/kvimage/main.go"
    declare -f layer_tar tree_layer stage_base stage_bins pack build_images finish_launcher_tree
  } | hash12)
  out=$cache/$version-$key
  if $paths_only; then
    printf '%s\n' "minbase $minbase" "builder $builder" "launcher $launcher" "handler $handler" \
      "libnbd-go $libnbd_go" "bin $cache/bin-$version-$(bin_key)" "out $out"
    return
  fi
  if ! $rebuild && [[ -f $out/images.txt ]]; then
    if [[ ! -f $out/manifests/kubevirt-operator.yaml ]]; then
      exec {lock}>"$out.lock"
      flock "$lock"
      timings=$out/timings.txt
      prepare_binaries
      render_manifests
    fi
    log "cached: $out"
    echo "$out"
    return
  fi
  exec {lock}>"$out.lock"
  flock "$lock"
  mkdir -p "$out"
  timings=$out/timings.txt.tmp
  : >"$timings"
  local start=$SECONDS host_job
  mkdir -p "$cache/trees"
  cached_dir tree:minbase "$minbase" build_minbase
  cached_dir tree:builder "$builder" build_tree_from builder
  cached_dir libnbd-go "$libnbd_go" build_libnbd_go
  prepare_binaries
  # The Go builds (CPU) overlap the runtime trees (mostly downloads). On any exit the
  # script waits for them, so that no build outlives it.
  build_host_binaries &
  host_job=$!
  trap 'wait' EXIT
  cached_dir tree:launcher "$launcher" build_tree_from launcher
  cached_dir tree:handler "$handler" build_tree_from handler
  wait "$host_job" || die "a host build failed"
  build_binary virt-launcher build_launcher
  build_binary container-disk build_container_disk
  rm -rf "${out:?}/bin"
  cp -al "$bin" "$out/bin"
  kvimage=$out/kvimage
  (cd "$imagemod" && CGO_ENABLED=0 go build -trimpath -o "$kvimage" ./kvimage)
  build_images
  render_manifests
  timing total built $((SECONDS - start))
  mv "$timings" "$out/timings.txt"
  prune_superseded
  log "done: $out"
  echo "$out"
}

# One line: bash reads it whole before running it, so an edit to this file during a
# (long) run cannot make bash read on into the changed text.
main "$@"; exit
