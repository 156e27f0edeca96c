#!/usr/bin/env bash
# A real single-node Kubernetes v1.37.2 on this host, as plain processes:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy and containerd, with state in tmp/cluster/ (docs/cluster.md).
#
#   cluster.sh prepare            install the Debian packages and build the binaries only
#   cluster.sh up                 start it (tears a crashed one down first); idempotent
#   cluster.sh down               stop it and return the host to how it was before up
#   cluster.sh status             processes, memory, node and Pods
#   cluster.sh footprint          the whole node's memory on one line (RSS and PSS)
#   cluster.sh import-binary BINARY NAME [--path /p] [--user U] [--arg A]...
#                                 pack a static binary as image NAME (entrypoint /p) and import it
#   cluster.sh import-dir DIR NAME --entrypoint /p [--user U] [--arg A]...
#                                 pack every file of DIR at the image's root and import it
#   cluster.sh import-files NAME SRC:DEST...
#                                 pack files at the given paths (e.g. a containerDisk) and import it
#   cluster.sh import-operator [IMG]
#                                 build the operator as the Dockerfile does and import it as IMG
#   cluster.sh install-kubevirt   import KubeVirt v1.8.0's images (hack/kubevirt/build.sh) and
#                                 install it from its release manifests and a KubeVirt CR
#
# Every kubectl call names the cluster's kubeconfig and context; the user's
# ~/.kube/config is never read or written.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN=

usage() {
  sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

# ---------------------------------------------------------------------------
# up

cmd_up() {
  require_root
  local start=$SECONDS
  tear_down_other_cluster up
  if cluster_running; then
    log "already up (kubeconfig $KUBECONFIG_FILE, context $CONTEXT)"
    return 0
  fi
  if previous_run_left_something; then
    log "a previous cluster did not stop cleanly: tearing it down first"
    teardown
  fi
  check_kubelet_root
  install_packages
  BIN=$("$root/hack/cluster/node-assets.sh")
  check_ports_free
  prepare_state_dir
  echo "$STATE" >"$HOST_CLUSTER_FILE"
  record_baseline
  # From here on a failure leaves a partial cluster; say how to clean it.
  trap 'log "bring-up failed; logs in $STATE/logs; make cluster-down cleans up"' EXIT
  setup_network
  setup_cgroups
  setup_shared_mounts
  write_pki
  write_configs
  local assets_done=$SECONDS
  start_node_namespace
  start_containerd
  import_image "$PAUSE_IMAGE" -file "$BIN/pause:/pause"
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  start_kubelet
  start_kube_proxy
  wait_node_ready
  start_cluster_dns
  trap - EXIT
  log "up: node $NODE_NAME Ready $((SECONDS - assets_done))s after the first process started ($((SECONDS - start))s in all)"
  log "kubectl --kubeconfig $KUBECONFIG_FILE --context $CONTEXT get nodes"
}

# cluster_running is true when every component recorded by the last up runs.
cluster_running() {
  local c
  for c in "${COMPONENTS[@]}"; do
    component_pid "$c" >/dev/null || return 1
  done
}

# tear_down_other_cluster tears down, with its own baseline, what a cluster
# started from another checkout (another state directory) left on this host:
# an interrupted run's, or a crashed one's. up stops one that still runs only
# in CI, where nothing else may hold the host; down always does, since it is
# asked to give the host back.
tear_down_other_cluster() {
  local other
  [[ -f $HOST_CLUSTER_FILE ]] || return 0
  other=$(<"$HOST_CLUSTER_FILE")
  [[ -n $other && $other != "$STATE" ]] || return 0
  if [[ ! -d $other ]]; then
    log "the cluster started from $other did not stop cleanly, and that state directory (with its baseline) is gone"
    rm -f "$HOST_CLUSTER_FILE"
    return 0
  fi
  if [[ $1 == up && ${CI:-} != true ]] && (STATE=$other && cluster_running); then
    die "a cluster started from another checkout runs on this host (state $other); stop it first: KUBEVIRT_IMDS_CLUSTER_STATE=$other $root/hack/cluster/cluster.sh down"
  fi
  log "a cluster started from another checkout (state $other) is on this host: tearing it down first"
  KUBEVIRT_IMDS_CLUSTER_STATE=$other "$root/hack/cluster/cluster.sh" down ||
    die "could not tear down the cluster of $other (see above)"
}

previous_run_left_something() {
  [[ -d $STATE/pids || -d $STATE/baseline ]] && return 0
  ip link show "$NODE_LINK" >/dev/null 2>&1 && return 0
  ip link show "$BRIDGE" >/dev/null 2>&1 && return 0
  [[ -n $(our_processes) || -n $(our_mounts) ]] && return 0
  compgen -G "/sys/fs/cgroup/*/$CGROUP_ROOT" >/dev/null && return 0
  return 1
}

check_kubelet_root() {
  if [[ -e $KUBELET_ROOT ]]; then
    die "$KUBELET_ROOT exists and was not created by this cluster: another kubelet's state? \
The local cluster runs its kubelet with that root (KubeVirt assumes it) and removes it at \
cluster-down, so it will not start over it. Move it away if it is stale."
  fi
}

install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
    missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v nft >/dev/null || missing+=(nftables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v socat >/dev/null || missing+=(socat) # kubelet port-forward
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_ports_free() {
  local port
  for port in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" 10248 10249 10250 10256 10257 10259; do
    if [[ -n $(ss -Hltn "sport = :$port") ]]; then
      die "TCP port $port is in use; the local cluster needs it (ss -ltnp 'sport = :$port')"
    fi
  done
}

prepare_state_dir() {
  mkdir -p "$STATE"
  # The previous run's logs stay readable until the next up.
  local d
  for d in logs pod-logs; do
    if [[ -d $STATE/$d ]]; then
      rm -rf "${STATE:?}/$d.prev"
      mv "$STATE/$d" "$STATE/$d.prev"
    fi
  done
  mkdir -p "$STATE"/{logs,pids,pki,config,run,images,cni/net.d,cni/ipam,pod-logs,containerd}
  echo "$BIN" >"$STATE/bin-dir"
}

# record_baseline notes what down must put back: sysctl values and which of the
# fixed host paths, netns files and nft tables existed before the cluster.
record_baseline() {
  local b=$STATE/baseline k v p
  mkdir -p "$b"
  : >"$b/sysctls"
  for k in "${SYSCTLS[@]}"; do
    if v=$(sysctl -n "$k" 2>/dev/null); then echo "$k=$v" >>"$b/sysctls"; fi
  done
  : >"$b/paths"
  for p in "${HOST_PATHS[@]}"; do
    [[ -e $p ]] && echo "$p" >>"$b/paths"
  done
  compgen -G '/run/netns/cni-*' >"$b/netns" || true
  compgen -G '/run/containerd/s/*' >"$b/shim-sockets" || true
  nft list tables >"$b/nft-tables"
  # check_kubelet_root passed: the kubelet root is the cluster's to remove.
  touch "$b/kubelet-root-ours"
}

setup_network() {
  log "network: $NODE_LINK $NODE_IP/32 (veth, peer $PEER_LINK), pods $POD_CIDR on $BRIDGE, services $SERVICE_CIDR"
  ip link add "$NODE_LINK" type veth peer name "$PEER_LINK"
  # No IPv6 on the pair: nothing should solicit routers from a test link.
  sysctl -qw "net.ipv6.conf.$NODE_LINK.disable_ipv6=1" "net.ipv6.conf.$PEER_LINK.disable_ipv6=1"
  ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$PEER_LINK" up
  ip link set "$NODE_LINK" up
  # Host traffic to a ClusterIP is DNATed by kube-proxy after the route lookup;
  # this route keeps it on the veth (never the default route) even before
  # kube-proxy has programmed a Service.
  ip route add "$SERVICE_CIDR" dev "$NODE_LINK" src "$NODE_IP"
}

setup_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    # Only the hierarchies the kubelet and runc use; never another tool's
    # named hierarchy.
    case ${h##*/} in
      blkio | cpu | cpuacct | cpuset | devices | freezer | hugetlb | memory | net_cls | net_prio | perf_event | pids | rdma | misc | systemd | unified) ;;
      *) continue ;;
    esac
    mkdir -p "$h/$CGROUP_ROOT"
  done
  # A new v1 cpuset cgroup has no CPUs or memory nodes until given some.
  if [[ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.mems"
  fi
}

setup_shared_mounts() {
  local m
  for m in "${SHARED_MOUNTS[@]}"; do
    mkdir -p "$m"
    mount --bind "$m" "$m"
    mount --make-rshared "$m"
  done
  # containerd 1.6 looks a Bidirectional volume's path up in mountinfo
  # without resolving its parents' symlinks: /var/run/kubevirt (/var/run is
  # a link to /run) is found on /, which must then be shared too, as systemd
  # makes it on most hosts. Only / itself: its submounts keep their own.
  if [[ $(findmnt -no PROPAGATION /) != shared ]]; then
    touch "$STATE/baseline/root-was-private"
    mount --make-shared /
  fi
}

# restore_root_propagation undoes setup_shared_mounts' change to /.
restore_root_propagation() {
  if [[ -f $STATE/baseline/root-was-private ]]; then
    mount --make-private /
    log "restored / to a private mount"
  fi
}

# --- certificates and kubeconfigs ------------------------------------------

gen_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# gen_ca NAME CN: a self-signed CA.
gen_ca() {
  local pki=$STATE/pki
  gen_key "$pki/$1.key"
  openssl req -x509 -new -key "$pki/$1.key" -subj "/CN=$2" -days 365 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$pki/$1.crt" 2>/dev/null
}

# gen_cert NAME SUBJECT EXTENDED-KEY-USAGE [SUBJECT-ALT-NAMES] (signed by CA, default ca)
gen_cert() {
  local pki=$STATE/pki name=$1 subject=$2 eku=$3 san=${4:-} ca=${CA:-ca}
  gen_key "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z $san ]] || echo "subjectAltName=$san"
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
    -days 365 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

# write_kubeconfig FILE USER CERT-NAME: one cluster, one user, one context.
write_kubeconfig() {
  local file=$1 user=$2 cert=$3 pki=$STATE/pki
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CONTEXT
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$pki/$cert.crt")
    client-key-data: $(base64 -w0 "$pki/$cert.key")
contexts:
- name: $CONTEXT
  context:
    cluster: $CONTEXT
    user: $user
current-context: $CONTEXT
EOF
  chmod 600 "$file"
}

write_pki() {
  local pki=$STATE/pki
  gen_ca ca kubevirt-imds-local-ca
  # The aggregation layer (KubeVirt's virt-api serves subresources.kubevirt.io):
  # the API server proxies with this client certificate and extension API
  # servers trust the identity headers of requests that carry it.
  gen_ca front-proxy-ca kubevirt-imds-local-front-proxy-ca
  CA=front-proxy-ca gen_cert front-proxy-client "/CN=front-proxy-client" clientAuth
  gen_key "$pki/sa.key"
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  gen_cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  gen_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  gen_cert admin "/O=system:masters/CN=kubevirt-imds-admin" clientAuth
  gen_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  gen_cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  gen_cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
  gen_cert kube-proxy "/CN=system:kube-proxy" clientAuth
  write_kubeconfig "$KUBECONFIG_FILE" kubevirt-imds-admin admin
  local c
  for c in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    write_kubeconfig "$pki/$c.kubeconfig" "$c" "$c"
  done
}

write_configs() {
  local cfg=$STATE/config
  cat >"$cfg/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[plugins]
  # Its default is /opt/containerd.
  [plugins."io.containerd.internal.v1.opt"]
    path = "$STATE/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # root here lacks CAP_SYS_RESOURCE: containers must not get a lower oom_score_adj than containerd.
    restrict_oom_score_adj = true
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          Root = "$STATE/containerd/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$STATE/cni/net.d"
EOF

  # bridge + host-local; the loopback plugin is run by containerd's CRI itself
  # for every Pod's lo (a loopback entry in this chain would act on eth0).
  # No ipMasq: Pods only talk to the node and each other, and it would leave
  # CNI-* nat chains behind after a crash.
  cat >"$STATE/cni/net.d/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF

  cat >"$cfg/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1 (hybrid); Kubernetes 1.37 still runs on it when told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization:
  mode: Webhook
podLogsDir: $STATE/pod-logs
clusterDomain: $CLUSTER_DOMAIN
# The DNS add-on (start_cluster_dns), as kubeadm sets its kubelets up.
clusterDNS: [$CLUSTER_DNS_IP]
failSwapOn: false
# Other work shares this disk: never evict for it, and never garbage-collect
# images, which cannot be pulled again (there is no registry).
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# KubeVirt's dedicated CPUs (dedicatedCpuPlacement) need the static CPU
# manager, which virt-handler reads from the kubelet's state file to label the
# node cpumanager=true. The static policy needs a CPU reservation; 100m keeps
# one of this node's two cores exclusively allocatable.
cpuManagerPolicy: static
kubeReserved: {cpu: "100m"}
EOF

  cat >"$cfg/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $STATE/pki/kube-proxy.kubeconfig
mode: nftables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts only on the node's own address, never on the host's.
nodePortAddresses: ["$NODE_IP/32"]
# Zero: leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# --- processes ---------------------------------------------------------------

# start_component NAME COMMAND... runs COMMAND in its own session, detached
# from the caller's terminal and pipes, and records its PID and start time.
start_component() {
  local name=$1 init
  shift
  if [[ " ${NODE_COMPONENTS[*]} " == *" $name "* ]]; then
    init=$(component_pid node-init) || die "the node's namespaces are gone"
    # nsenter forks into the PID namespace and waits: the component is its child.
    setsid nsenter --target "$init" --pid --mount -- "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1 8>&- &
    record_child_pid "$name" $!
    return
  fi
  # 8>&-: the daemons must not inherit (and so hold) the state lock.
  setsid "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1 8>&- &
  local pid=$!
  echo "$pid $(proc_start_time "$pid")" >"$STATE/pids/$name"
}

# record_child_pid NAME PID records PID's only child as component NAME.
record_child_pid() {
  local name=$1 parent=$2 child=""
  local deadline=$((SECONDS + 10))
  until child=$(pgrep -P "$parent"); do
    ((SECONDS < deadline)) || die "$name did not start (log: $STATE/logs/$name.log)"
    sleep 0.05
  done
  echo "$child $(proc_start_time "$child")" >"$STATE/pids/$name"
}

# start_node_namespace starts the node's init: the first process of a new PID
# namespace (and a mount namespace whose shared mounts stay peers of the
# host's), in which containerd, the kubelet and kube-proxy run. KubeVirt's
# virt-handler runs with hostPID and enters /proc/1/ns/mnt ("the host's mount
# namespace") for its mounts; on this kind of machine the real PID 1 is a
# sandbox agent whose namespaces root may not open, so PID 1 of the node's
# Pods must be a process of the node, as on any real node. Its /proc is its
# own, so that the PIDs containerd and runc exchange are the ones /proc shows.
start_node_namespace() {
  log "starting the node's PID namespace"
  setsid unshare --pid --fork --kill-child --mount --propagation unchanged --mount-proc \
    "$BIN/pause" </dev/null >>"$STATE/logs/node-init.log" 2>&1 8>&- &
  record_child_pid node-init $!
}

# wait_component TIMEOUT NAME COMMAND... waits for COMMAND to succeed while the
# component still runs; a component that died fails at once, showing its log.
wait_component() {
  local timeout=$1 name=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! component_pid "$name" >/dev/null; then
      tail -n 20 "$STATE/logs/$name.log" >&2 || true
      die "$name exited (log: $STATE/logs/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$STATE/logs/$name.log" >&2 || true
      die "$name not ready after ${timeout}s (log: $STATE/logs/$name.log)"
    fi
    sleep 0.2
  done
}

start_containerd() {
  log "starting containerd ($(containerd --version | awk '{print $3}'))"
  start_component containerd containerd --config "$STATE/config/containerd.toml"
  wait_component 30 containerd ctr --address "$CONTAINERD_SOCK" version
}

start_etcd() {
  log "starting etcd"
  start_component etcd "$BIN/etcd" --name "$NODE_NAME" --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
  wait_component 30 etcd curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

# The API server reaches the kubelet (logs, exec, port-forward) at the node's
# InternalIP: its default, the hostname, would be looked up in the host's DNS.
start_apiserver() {
  local pki=$STATE/pki
  log "starting kube-apiserver on $NODE_IP:$APISERVER_PORT"
  start_component kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --cert-dir "$STATE/apiserver" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --kubelet-preferred-address-types InternalIP \
    --allow-privileged=true \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key"
  wait_component 90 kube-apiserver kc get --raw /readyz
}

start_controller_manager() {
  local pki=$STATE/pki
  log "starting kube-controller-manager, kube-scheduler, kubelet, kube-proxy"
  start_component kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --use-service-account-credentials \
    --allocate-node-cidrs --cluster-cidr "$POD_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR"
}

start_scheduler() {
  local pki=$STATE/pki
  start_component kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$pki/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$pki/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$pki/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false
}

start_kubelet() {
  mkdir -p "$KUBELET_ROOT"
  start_component kubelet "$BIN/kubelet" --config "$STATE/config/kubelet.yaml" \
    --kubeconfig "$STATE/pki/kubelet.kubeconfig" --root-dir "$KUBELET_ROOT" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1
}

start_kube_proxy() {
  start_component kube-proxy "$BIN/kube-proxy" --config "$STATE/config/kube-proxy.yaml"
}

node_ready() {
  [[ $(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

wait_node_ready() {
  local c
  local deadline=$((SECONDS + 120))
  until node_ready 2>/dev/null; do
    for c in "${COMPONENTS[@]}"; do
      component_pid "$c" >/dev/null || {
        tail -n 20 "$STATE/logs/$c.log" >&2
        die "$c exited (log: $STATE/logs/$c.log)"
      }
    done
    ((SECONDS < deadline)) || die "node $NODE_NAME not Ready after 120s (logs: $STATE/logs)"
    sleep 0.2
  done
  # Pods are refused until the controller-manager has made the default
  # ServiceAccount; wait for it so the cluster is usable when up returns.
  wait_until 60 "the default ServiceAccount" kc -n default get serviceaccount default ||
    die "no default ServiceAccount"
  # As kubeadm marks its single node: operators that pin their Pods to the
  # control plane (KubeVirt's virt-operator does) find it.
  kc label node "$NODE_NAME" node-role.kubernetes.io/control-plane= --overwrite >/dev/null
}

# start_cluster_dns deploys the cluster's DNS add-on as kubeadm does: CoreDNS
# (built by node-assets.sh) in kube-system behind the Service kube-dns at
# CLUSTER_DNS_IP, which the kubelet gives every Pod as its nameserver. Names
# in the cluster domain resolve (OLM's catalog operator reaches its catalogs
# as <service>.<namespace>.svc); nothing is forwarded, since nothing outside
# the node may be reached. It listens on 1053, behind the Service's port 53,
# so it runs as non-root with no capability.
start_cluster_dns() {
  import_image "$COREDNS_IMAGE" -file "$BIN/coredns:/coredns" -user 65532:65532
  kc apply --server-side -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        errors
        health :8080
        ready :8181
        kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
            pods insecure
            ttl 30
        }
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 1053, protocol: UDP}
        - {name: dns-tcp, containerPort: 1053, protocol: TCP}
        livenessProbe: {httpGet: {path: /health, port: 8080}}
        readinessProbe: {httpGet: {path: /ready, port: 8181}}
        resources:
          requests: {cpu: 10m, memory: 70Mi}
          limits: {memory: 170Mi}
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
          seccompProfile: {type: RuntimeDefault}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: $CLUSTER_DNS_IP
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
EOF
  kc -n kube-system rollout status deployment/coredns --timeout=2m >&2 || die "CoreDNS not ready (Pod logs in $STATE/pod-logs)"
}

# --- images ------------------------------------------------------------------

# parse_image_flags turns --path/--entrypoint/--user/--arg into imgpack flags
# (in the array flags) and sets path.
parse_image_flags() {
  while (($#)); do
    case $1 in
      --path | --entrypoint) path=$2; shift 2 ;;
      --user) flags+=(-user "$2"); shift 2 ;;
      --arg) flags+=(-arg "$2"); shift 2 ;;
      *) die "unknown flag $1" ;;
    esac
  done
}

cmd_import_binary() {
  require_root
  (($# >= 2)) || die "usage: cluster.sh import-binary BINARY NAME [--path /p] [--user U] [--arg A]..."
  local binary=$1 name=$2 path="" flags=()
  shift 2
  parse_image_flags "$@"
  [[ -n $path ]] || path=/$(basename "$binary")
  component_pid containerd >/dev/null || die "the cluster is not up (make cluster-up)"
  load_bin_dir
  import_image "$name" -file "$binary:$path" "${flags[@]}"
}

cmd_import_dir() {
  require_root
  (($# >= 2)) || die "usage: cluster.sh import-dir DIR NAME --entrypoint /p [--user U] [--arg A]..."
  local dir=$1 name=$2 path="" flags=()
  shift 2
  parse_image_flags "$@"
  [[ -n $path ]] || die "import-dir needs --entrypoint"
  component_pid containerd >/dev/null || die "the cluster is not up (make cluster-up)"
  load_bin_dir
  import_image "$name" -dir "$dir" -entrypoint "$path" "${flags[@]}"
}

# cmd_import_operator builds the image's binaries with the Dockerfile's own
# build command (hack/docker-build-command.sh, into a directory) and imports
# them as the Dockerfile's image: that directory at /, user 65532, entrypoint
# /kubevirt-imds.
# cmd_import_files NAME SRC:DEST... packs files at the given paths (e.g. a
# containerDisk: a disk image at /disk/, and a kernel for kernelBoot).
cmd_import_files() {
  require_root
  (($# >= 2)) || die "usage: cluster.sh import-files NAME SRC:DEST..."
  local name=$1 spec flags=()
  shift
  for spec in "$@"; do
    [[ $spec == *:/* && -f ${spec%%:*} ]] || die "import-files: $spec is not SRC:/DEST with SRC a file"
    flags+=(-file "$spec")
  done
  component_pid containerd >/dev/null || die "the cluster is not up (make cluster-up)"
  load_bin_dir
  import_image "$name" "${flags[@]}"
}

cmd_import_operator() {
  local img=${1:-kubevirt-imds:dev} out=$STATE/images/operator
  component_pid containerd >/dev/null || die "the cluster is not up (make cluster-up)"
  log "building the operator image's binaries (hack/docker-build-command.sh)"
  rm -rf "$out"
  (cd "$root" && hack/docker-build-command.sh "$out")
  cmd_import_dir "$out" "$img" --entrypoint /kubevirt-imds --user 65532:65532
}

# ---------------------------------------------------------------------------
# KubeVirt

# cmd_install_kubevirt installs KubeVirt v1.8.0 the way its users do: the
# release's kubevirt-operator.yaml, then a KubeVirt CR, from which the real
# virt-operator deploys virt-api, virt-controller and virt-handler. The images
# and manifests come from hack/kubevirt/build.sh (built offline, cached).
cmd_install_kubevirt() {
  require_root
  component_pid containerd >/dev/null || die "the cluster is not up (make cluster-up)"
  load_bin_dir
  local dir start=$SECONDS ref tar
  dir=$("$root/hack/kubevirt/build.sh")
  local built=$SECONDS
  while read -r ref tar; do
    ctr_k8s images import "$tar" >/dev/null || die "importing $tar"
  done <"$dir/images.txt"
  log "imported KubeVirt's images ($((SECONDS - built))s)"
  kc apply --server-side -f "$dir/manifests/kubevirt-operator.yaml" >/dev/null
  kc -n kubevirt rollout status deployment/virt-operator --timeout=5m >&2
  # The release's CR, then the local configuration over it; on a cluster
  # that has both already, the CR is left as it is (applying it again would
  # conflict with the patch's fields).
  if ! kc -n kubevirt get kubevirts.kubevirt.io kubevirt >/dev/null 2>&1; then
    kc apply --server-side -f "$dir/manifests/kubevirt-cr.yaml" >/dev/null
  fi
  kc -n kubevirt patch kubevirts.kubevirt.io kubevirt --type merge --patch-file "$root/hack/cluster/kubevirt-config.yaml" >/dev/null
  log "waiting for KubeVirt to be Available (virt-operator deploys virt-api, virt-controller, virt-handler)"
  if ! kc -n kubevirt wait kubevirts.kubevirt.io/kubevirt --for=condition=Available --timeout=15m >&2; then
    kc -n kubevirt get pods -o wide >&2 || true
    die "KubeVirt not Available; Pod logs in $STATE/pod-logs"
  fi
  log "KubeVirt Available $((SECONDS - built))s after its images were built ($((SECONDS - start))s in all)"
}

# ---------------------------------------------------------------------------
# down

cmd_down() {
  require_root
  local start=$SECONDS
  tear_down_other_cluster down
  teardown
  log "down in $((SECONDS - start))s"
}

# our_processes prints the PIDs of the cluster's programs (by name) that name
# the state directory on their command line, as every component and containerd
# shim does: the ones a lost PID file would otherwise hide.
our_processes() {
  local f pid
  while read -r f; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    case $(cat "/proc/$pid/comm" 2>/dev/null) in
      containerd | containerd-shim | etcd | kube-apiserver | kube-controller | kube-scheduler | kubelet | kube-proxy) echo "$pid" ;;
    esac
  done < <(grep -lsaF -- "$STATE/" /proc/[0-9]*/cmdline || true)
}

teardown() {
  [[ -n $BIN ]] || BIN=$(cat "$STATE/bin-dir" 2>/dev/null || true)
  stop_pods
  stop_components
  kill_containers
  unmount_all
  restore_root_propagation
  remove_links
  remove_netfilter
  remove_cgroups
  restore_sysctls
  remove_host_paths
  # The baseline goes only when nothing is left, so that another down can
  # still finish the job.
  report_leftovers
  remove_state
  if [[ -f $HOST_CLUSTER_FILE && $(<"$HOST_CLUSTER_FILE") == "$STATE" ]]; then rm -f "$HOST_CLUSTER_FILE"; fi
}

# stop_pods removes every Pod sandbox through the CRI while containerd still
# runs, so that CNI DEL releases the Pods' veths and addresses the usual way.
# The kubelet goes first so it does not restart them. After a crash (no
# containerd) the sweeps below do the same by force.
stop_pods() {
  local pid
  if pid=$(component_pid kubelet); then kill_pids 10 "$pid"; fi
  if component_pid containerd >/dev/null && [[ -x $BIN/crictl ]]; then
    timeout 60 "$BIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" rmp --all --force >/dev/null 2>&1 ||
      log "crictl rmp failed; removing the Pods by force"
  fi
}

stop_components() {
  local c pid pids=()
  # The kubelet and the Pods are gone: nothing depends on the order any more,
  # so all get SIGTERM at once, and 3 s: all their state is thrown away, and
  # kube-apiserver does not exit on SIGTERM within 15 s here.
  for c in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$c"); then pids+=("$pid"); fi
  done
  kill_pids 3 "${pids[@]}"
  # Anything else naming the state directory: shims, or components whose PID
  # files were lost.
  mapfile -t pids < <(our_processes)
  kill_pids 5 "${pids[@]}"
}

# kill_containers kills every process left in the cluster's cgroups (containers
# and pause processes outlive their killed shims).
kill_containers() {
  local f=/sys/fs/cgroup/freezer/$CGROUP_ROOT pids=() try
  # A frozen process cannot die.
  if [[ -d $f ]]; then
    find "$f" -name freezer.state -exec sh -c 'echo THAWED >"$1"' _ {} \; 2>/dev/null || true
  fi
  for try in 1 2 3 4 5 6 7 8 9 10; do
    mapfile -t pids < <(cgroup_pids)
    ((${#pids[@]})) || return 0
    ((try == 1)) || sleep 0.2
    kill -KILL "${pids[@]}" 2>/dev/null || true
  done
  log "warning: processes still in the cluster's cgroups: $(cgroup_pids | tr '\n' ' ')"
}

unmount_all() {
  local m f _
  for _ in 1 2 3; do
    while read -r m; do
      [[ -n $m ]] || continue
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(our_mounts)
  done
  while read -r f; do
    [[ -n $f ]] || continue
    umount "$f" 2>/dev/null || umount -l "$f" 2>/dev/null || true
    rm -f "$f"
  done < <(new_netns_files)
}

remove_links() {
  local l
  # Pods' host-side veths normally die with their network namespace; any left
  # hangs on the bridge.
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    for l in $(ip -o link show master "$BRIDGE" | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$l" 2>/dev/null || true
    done
    ip link del "$BRIDGE"
  fi
  if ip link show "$NODE_LINK" >/dev/null 2>&1; then ip link del "$NODE_LINK"; fi
  if ip link show "$PEER_LINK" >/dev/null 2>&1; then ip link del "$PEER_LINK"; fi
}

# remove_netfilter deletes kube-proxy's nftables tables and every KUBE-* chain
# (with the rules jumping to them) the kubelet and kube-proxy made through
# iptables, then the tables iptables created for them if they are now empty
# and did not exist before up.
remove_netfilter() {
  local fam cmd t rule chain
  # Without a baseline this host's KUBE-* chains may be another cluster's.
  [[ -d $STATE/baseline ]] || return 0
  for fam in ip ip6; do nft delete table "$fam" kube-proxy 2>/dev/null || true; done
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for t in filter nat mangle raw; do
      "$cmd" -t "$t" -S >/dev/null 2>&1 || continue
      while read -r rule; do
        [[ -n $rule ]] || continue
        eval "$cmd -t $t -D ${rule#-A }" 2>/dev/null || true
      done < <("$cmd" -t "$t" -S 2>/dev/null | grep -E '^-A ' | grep -vE '^-A KUBE-' | grep -E -- '-j KUBE-' || true)
      for chain in $("$cmd" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
        "$cmd" -t "$t" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
        "$cmd" -t "$t" -X "$chain" 2>/dev/null || true
      done
    done
  done
  local baseline=$STATE/baseline/nft-tables line
  while read -r line; do
    [[ -n $line ]] || continue
    [[ -f $baseline ]] && grep -qxF "$line" "$baseline" && continue
    # "table ip filter" → family ip, name filter: only iptables' own tables,
    # and only empty ones (base chains without rules).
    # shellcheck disable=SC2086 # split the words on purpose
    set -- $line
    [[ $2 == ip || $2 == ip6 ]] || continue
    case $3 in filter | nat | mangle | raw | security) ;; *) continue ;; esac
    if ! grep -vqE '^\s*(table .*\{|chain .*\{|type .*;|\}|)\s*$' <<<"$(nft list table "$2" "$3" 2>/dev/null)"; then
      nft delete table "$2" "$3" 2>/dev/null || true
    fi
  done < <(nft list tables 2>/dev/null)
}

remove_cgroups() {
  local d _
  for _ in 1 2 3 4 5; do
    for d in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
      [[ -d $d ]] || continue
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    compgen -G "/sys/fs/cgroup/*/$CGROUP_ROOT" >/dev/null || return 0
    sleep 0.2
  done
}

restore_sysctls() {
  local file=$STATE/baseline/sysctls line k v now
  [[ -f $file ]] || return 0
  while IFS= read -r line; do
    k=${line%%=*}
    v=${line#*=}
    # /proc/sys directly: a fork per key is slow on a busy machine.
    now=$(<"/proc/sys/${k//.//}") 2>/dev/null || continue
    if [[ $now != "$v" ]]; then
      echo "$v" >"/proc/sys/${k//.//}"
      log "restored $k=$v (was $now)"
    fi
  done <"$file"
}

existed_before() { [[ -f $STATE/baseline/paths ]] && grep -qxF "$1" "$STATE/baseline/paths"; }

remove_host_paths() {
  local b=$STATE/baseline f
  # Without a baseline nothing says which of these paths were there before.
  [[ -d $b ]] || return 0
  if [[ -e $KUBELET_ROOT ]]; then
    if [[ -f $b/kubelet-root-ours ]]; then
      if [[ -n $(awk -v r="$KUBELET_ROOT" 'index($5, r) == 1' /proc/self/mountinfo) ]]; then
        log "warning: mounts left under $KUBELET_ROOT; not removing it"
      else
        rm -rf --one-file-system "$KUBELET_ROOT"
      fi
    else
      log "leaving $KUBELET_ROOT: this cluster did not create it"
    fi
  fi
  if existed_before /var/log/containers; then
    find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete
  else
    rm -rf /var/log/containers
  fi
  if existed_before /var/lib/cni; then
    rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
  else
    rm -rf /var/lib/cni
  fi
  if existed_before /run/containerd; then
    for f in /run/containerd/s/*; do
      [[ -e $f ]] || continue
      grep -qxF "$f" "$b/shim-sockets" 2>/dev/null || rm -f "$f"
    done
  else
    rm -rf --one-file-system /run/containerd
  fi
  for f in "${KUBEVIRT_HOST_PATHS[@]}"; do
    existed_before "$f" && continue
    if [[ -n $(awk -v r="$f" 'index($5, r) == 1' /proc/self/mountinfo) ]]; then
      log "warning: mounts left under $f; not removing it"
    else
      rm -rf --one-file-system "$f"
    fi
  done
}

# remove_state deletes the state directory except the logs (kept for a
# post-mortem until the next up) and the lock.
remove_state() {
  [[ -d $STATE ]] || return 0
  if [[ -n $(our_mounts) ]]; then
    log "warning: mounts left under $STATE; keeping it"
    return 0
  fi
  find "$STATE" -mindepth 1 -maxdepth 1 ! -name logs ! -name logs.prev ! -name pod-logs ! -name pod-logs.prev ! -name .lock -exec rm -rf --one-file-system {} +
}

# report_leftovers fails when anything of the cluster survived.
report_leftovers() {
  local left=()
  [[ -z $(our_processes) ]] || left+=("processes: $(our_processes | tr '\n' ' ')")
  [[ -z $(cgroup_pids) ]] || left+=("container processes: $(cgroup_pids | tr '\n' ' ')")
  [[ -z $(our_mounts) ]] || left+=("mounts: $(our_mounts | tr '\n' ' ')")
  [[ -z $(new_netns_files) ]] || left+=("netns: $(new_netns_files | tr '\n' ' ')")
  local l
  for l in "$NODE_LINK" "$PEER_LINK" "$BRIDGE"; do
    ip link show "$l" >/dev/null 2>&1 && left+=("link $l")
  done
  compgen -G "/sys/fs/cgroup/*/$CGROUP_ROOT" >/dev/null && left+=("cgroups: $(compgen -G "/sys/fs/cgroup/*/$CGROUP_ROOT" | tr '\n' ' ')")
  grep -q 'KUBE-\|table ip6\? kube-proxy' <<<"$(nft list ruleset 2>/dev/null)" && left+=("nftables KUBE-* chains")
  [[ -e $KUBELET_ROOT ]] && left+=("$KUBELET_ROOT")
  [[ -f $STATE/baseline/root-was-private && $(findmnt -no PROPAGATION /) == shared ]] && left+=("/ shared")
  for l in "${KUBEVIRT_HOST_PATHS[@]}"; do
    [[ -e $l ]] && ! existed_before "$l" && left+=("$l")
  done
  if ((${#left[@]})); then
    log "left behind: ${left[*]}"
    return 1
  fi
}

# ---------------------------------------------------------------------------
# status

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

cmd_status() {
  local c pid total=0 rss n=0
  [[ -n $BIN ]] || BIN=$(cat "$STATE/bin-dir" 2>/dev/null || true)
  printf '%-26s %8s %10s\n' COMPONENT PID RSS
  for c in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$c"); then
      rss=$(rss_kib "$pid")
      total=$((total + rss))
      printf '%-26s %8s %7d MiB\n' "$c" "$pid" $((rss / 1024))
    else
      printf '%-26s %8s %10s\n' "$c" - stopped
    fi
  done
  local shims=0 shim_rss=0
  for pid in $(shim_pids); do
    shims=$((shims + 1))
    shim_rss=$((shim_rss + $(rss_kib "$pid")))
  done
  local ctr_rss=0
  for pid in $(cgroup_pids); do
    n=$((n + 1))
    ctr_rss=$((ctr_rss + $(rss_kib "$pid")))
  done
  printf '%-26s %8s %7d MiB\n' "containerd shims ($shims)" - $((shim_rss / 1024))
  printf '%-26s %8s %7d MiB\n' "Pod processes ($n)" - $((ctr_rss / 1024))
  printf '%-26s %8s %7d MiB\n' total - $(((total + shim_rss + ctr_rss) / 1024))
  if component_pid kube-apiserver >/dev/null && [[ -n $BIN ]]; then
    echo
    kc get nodes -o wide
    echo
    kc get pods -A -o wide
  fi
  echo
  echo "kubeconfig $KUBECONFIG_FILE, context $CONTEXT"
}

# cmd_footprint prints the memory of the whole node on one line: the
# components, the containerd shims and every Pod process. PSS shares each
# page among the processes mapping it, so it adds up where RSS double counts.
cmd_footprint() {
  local c pid rss=0 pss=0 n=0 line
  local -a pids=()
  for c in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$c"); then pids+=("$pid"); fi
  done
  mapfile -t -O "${#pids[@]}" pids < <(shim_pids; cgroup_pids)
  for pid in $(printf '%s\n' "${pids[@]}" | sort -un); do
    while read -r line; do
      case $line in
        Rss:*) rss=$((rss + $(awk '{print $2}' <<<"$line"))) ;;
        Pss:*) pss=$((pss + $(awk '{print $2}' <<<"$line"))) ;;
      esac
    done <"/proc/$pid/smaps_rollup" 2>/dev/null || continue
    n=$((n + 1))
  done
  echo "processes=$n rss_mib=$((rss / 1024)) pss_mib=$((pss / 1024))"
}

main() {
  case ${1:-} in
    up | down | import-binary | import-dir | import-files | import-operator | install-kubevirt) lock_state ;;
  esac
  case ${1:-} in
    prepare) require_root; install_packages; "$root/hack/cluster/node-assets.sh" ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    footprint) cmd_footprint ;;
    import-binary) shift; cmd_import_binary "$@" ;;
    import-dir) shift; cmd_import_dir "$@" ;;
    import-files) shift; cmd_import_files "$@" ;;
    import-operator) shift; cmd_import_operator "$@" ;;
    install-kubevirt) cmd_install_kubevirt ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
