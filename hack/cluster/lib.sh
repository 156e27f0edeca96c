# shellcheck shell=bash disable=SC2034  # the settings are used by cluster.sh
# Shared settings and helpers of hack/cluster/cluster.sh (sourced, not run).
# docs/cluster.md explains the layout; every name and address lives here.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Everything the cluster writes lives here (tmp/ is git-ignored), except what
# the kubelet, containerd and CNI write to fixed paths (see host_paths below).
STATE=${KUBEVIRT_IMDS_CLUSTER_STATE:-$root/tmp/cluster}
CONTEXT=kubevirt-imds-local
KUBECONFIG_FILE=$STATE/kubeconfig
NODE_NAME=kvimds-node

# Addresses: one private /16 that nothing else on this kind of machine uses
# (the host is 192.0.2.0/24; kind, Docker and Kubernetes defaults are 172.17-18/16,
# 10.96.0.0/12 and 10.244.0.0/16).
NODE_IP=10.213.255.1          # on the veth kvimds-node, /32: no connected route
POD_CIDR=10.213.0.0/24        # the bridge kvimds-br0 is its .1
POD_GATEWAY=10.213.0.1
SERVICE_CIDR=10.213.128.0/24  # the kubernetes Service is its .1
KUBERNETES_SERVICE_IP=10.213.128.1
CLUSTER_DNS_IP=10.213.128.10  # the kube-dns Service (CoreDNS), as kubeadm numbers it
CLUSTER_DOMAIN=cluster.local
NODE_LINK=kvimds-node         # veth holding NODE_IP
PEER_LINK=kvimds-peer         # its other end, up and address-less
BRIDGE=kvimds-br0
CNI_NETWORK=kvimds

# Loopback ports (the API server listens on NODE_IP:6443).
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=6443

# The kubelet's root is the standard one, because KubeVirt's virt-handler
# assumes it; up refuses to start if it exists and is not ours.
KUBELET_ROOT=/var/lib/kubelet
# A dedicated cgroup parent in every hierarchy: everything the kubelet and runc
# create is below it, so teardown removes exactly that subtree.
CGROUP_ROOT=kubevirt-imds

CONTAINERD_SOCK=$STATE/run/containerd.sock
PAUSE_IMAGE=kubevirt-imds.local/pause:v1
TESTSERVER_IMAGE=kubevirt-imds.local/testserver:v1
COREDNS_IMAGE=kubevirt-imds.local/coredns:v1.12.4

# Sysctls the kubelet (kernel tunables), the bridge plugin (ip_forward) or
# kube-proxy may change; up records them and down writes back what changed.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv4.conf.default.forwarding
  net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding
  net.ipv4.conf.all.route_localnet
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)

# KubeVirt's virt-handler keeps its state in fixed host directories (hostPath
# volumes that virt-operator renders).
KUBEVIRT_HOST_PATHS=(/run/kubevirt /run/kubevirt-private /run/kubevirt-libvirt-runtimes
  /var/lib/kubevirt-node-labeller)
# Mounts that must propagate both ways (virt-handler's Bidirectional volumes:
# it mounts containerDisks and hotplugged volumes into launcher Pods). The
# host's / is a private mount here, so each is made a shared bind mount of
# itself; containerd refuses Bidirectional on anything else.
SHARED_MOUNTS=("$KUBELET_ROOT" /run/kubevirt)

# Fixed paths outside STATE that the node writes: the kubelet's root, the
# containers' log links, libcni's cache (containerd 1.6 cannot move it), and the
# shims' sockets (/run/containerd/s is compiled into containerd 1.6).
HOST_PATHS=("$KUBELET_ROOT" /var/log/containers /var/lib/cni /run/containerd "${KUBEVIRT_HOST_PATHS[@]}")

# Names the state directory of the cluster this host runs, or ran and did not
# stop cleanly, whichever checkout started it. A host holds one cluster (the
# kubelet's root, the links and the ports are fixed), and only the baseline in
# that checkout's state directory says what its teardown must put back.
HOST_CLUSTER_FILE=/var/lib/kubevirt-imds-cluster

# Components in start order; down stops them in reverse.
COMPONENTS=(node-init containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# The ones that run inside the node's PID and mount namespaces (see
# start_node_namespace in cluster.sh).
NODE_COMPONENTS=(containerd kubelet kube-proxy)

log() { printf '%s cluster: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() {
  [[ $(id -u) == 0 ]] || die "must run as root (network links, cgroups, mounts, containerd)"
}

# lock_state serialises the commands that change the cluster (cluster.sh's and
# olm.sh's): an interrupted test's cleanup and a manual down must not tear down
# at the same time.
lock_state() {
  mkdir -p "$STATE"
  exec 8>"$STATE/.lock"
  flock -w 600 8 || die "another cluster.sh holds $STATE/.lock"
}

# kc runs the cluster's kubectl, always with the cluster's own kubeconfig and
# context, never the user's.
kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --context "$CONTEXT" --cache-dir "$STATE/kubectl-cache" "$@"; }

# ctr_k8s runs ctr against the cluster's containerd, in the CRI's namespace.
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# wait_until SECONDS WHAT COMMAND... polls COMMAND every 0.2 s.
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# proc_start_time PID prints the process's start time in clock ticks (field 22
# of /proc/PID/stat), so that a recorded PID is never confused with a reused one.
proc_start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086 # split the fields on purpose
  set -- $stat
  echo "${20}"
}

# component_pid NAME prints the PID recorded for NAME if that very process
# still runs: same start time, and not a zombie (a killed component is
# re-parented to PID 1, which here may be slow to reap it).
component_pid() {
  local file=$STATE/pids/$1 pid start stat
  [[ -f $file ]] || return 1
  read -r pid start <"$file" || return 1
  [[ $(proc_start_time "$pid" 2>/dev/null) == "$start" ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]] || return 1
  echo "$pid"
}

# kill_pids SIGNAL-WAIT PID... sends TERM, waits up to the given seconds for the
# processes to go, then KILLs what is left.
kill_pids() {
  local grace=$1 pid
  shift
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while ((SECONDS < deadline)); do
    local alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; do sleep 0.05; done
  done
}

# shim_pids prints the containerd shims serving this cluster's containerd: they
# re-parent to init and outlive a killed containerd, but name its socket.
shim_pids() {
  local f pid
  while read -r f; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == containerd-shim* ]] && echo "$pid"
  done < <(grep -lsaF -- "$CONTAINERD_SOCK" /proc/[0-9]*/cmdline || true)
}

# cgroup_pids prints every process in the cluster's cgroup subtrees (the Pods'
# containers and pause processes).
cgroup_pids() {
  local d
  for d in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
    [[ -d $d ]] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# our_mounts prints the mount points under STATE and the kubelet's root,
# deepest first (the Pods' network namespaces: see new_netns_files).
our_mounts() {
  local roots=("$STATE" "$KUBELET_ROOT" "${KUBEVIRT_HOST_PATHS[@]}")
  awk -v roots="${roots[*]}" '
    BEGIN { n = split(roots, r, " ") }
    { m = $5; gsub(/\\040/, " ", m)
      for (i = 1; i <= n; i++) if (index(m, r[i] "/") == 1 || m == r[i]) { print m; break } }' \
    /proc/self/mountinfo | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- | uniq
}

# The CRI of containerd 1.6 bind-mounts each Pod's network namespace at
# /run/netns/cni-<uuid> (a directory compiled in); the ones that were not there
# at up are this cluster's.
# new_netns_files prints the /run/netns/cni-* files that were not there at up.
new_netns_files() {
  local f
  for f in /run/netns/cni-*; do
    [[ -e $f ]] || continue
    if [[ -f $STATE/baseline/netns ]] && grep -qxF "$f" "$STATE/baseline/netns"; then continue; fi
    echo "$f"
  done
}

# --- images ------------------------------------------------------------------

# import_image NAME IMGPACK-FLAGS... packs files into image NAME with imgpack
# (-file SRC:DEST, -dir DIR, -entrypoint, -user, -arg) and imports it into
# containerd's k8s.io namespace, where the kubelet finds it.
import_image() {
  local name=$1
  shift
  local tar
  tar=$STATE/images/$(echo "$name" | tr '/:' '__').tar
  "$BIN/imgpack" -name "$name" -out "$tar" "$@"
  ctr_k8s images import "$tar" >/dev/null
  local full images
  full=$(normalized_image_name "$name")
  # (grep -q on a pipe would fail the pipeline with SIGPIPE under pipefail.)
  images=$(ctr_k8s images ls -q)
  grep -qxF "$full" <<<"$images" || die "image $full not found in containerd after import"
  log "imported image $full"
}

# normalized_image_name prints NAME as containerd stores it (docker's rules: a
# first component without '.' or ':' and not localhost means docker.io).
normalized_image_name() {
  local name=$1 first=${1%%/*}
  if [[ $name != */* ]]; then
    name=docker.io/library/$name
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    name=docker.io/$name
  fi
  [[ ${name##*/} == *:* || $name == *@* ]] || name=$name:latest
  echo "$name"
}

# load_bin_dir finds imgpack through node-assets.sh (a cache hit costs a
# second), not the running cluster's bin-dir: the script and imgpack must agree.
load_bin_dir() {
  BIN=$("$root/hack/cluster/node-assets.sh")
}
