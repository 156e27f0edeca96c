//go:build linux

package guest

import (
	"fmt"
	"sort"
	"strings"
)

// driverScript boots one guest. It runs on the host's tools as PID 1 of fresh
// UTS, mount, PID and IPC namespaces inside the guest's network namespace, so
// everything it mounts or starts (the overlay, dhclient, systemd-networkd) goes
// away with it, whatever way it ends. Every guest command runs chrooted into
// the overlay. Its results land in $GUEST_OUT for the Go side to read.
//
// Stages follow a real boot: cloud-init's four stages, with networking brought
// up between init-local and init the way each generation's init system would.
// A failing stage does not stop the boot, as on a real machine.
const driverScript = `set -u
m=$GUEST_MERGED
out=$GUEST_OUT
say() { echo "guest: $*"; }
die() { echo "guest: $*" >&2; exit 100; }
now_ms() { date +%s%3N; }

mount -t overlay overlay -o "lowerdir=$GUEST_LOWER,upperdir=$GUEST_UPPER,workdir=$GUEST_WORK" "$m" ||
	die "cannot mount the overlay"
mount -t proc -o nosuid,nodev,noexec proc "$m/proc" || die "cannot mount proc"
# Read-only, as the container interface has it: systemd-networkd then does not
# wait for a udev that never runs. Mounted from inside the guest netns, it
# shows cloud-init only the guest's NICs.
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$m/sys" || die "cannot mount sysfs"
mount -t tmpfs -o mode=755,size=1m,nosuid tmpfs "$m/dev" || die "cannot mount /dev"
for d in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
	# shellcheck disable=SC2086 # split "name major minor"
	set -- $d
	mknod -m 666 "$m/dev/$1" c "$2" "$3" || die "mknod $1"
done
ln -s /proc/self/fd "$m/dev/fd"
ln -s /proc/self/fd/0 "$m/dev/stdin"
ln -s /proc/self/fd/1 "$m/dev/stdout"
ln -s /proc/self/fd/2 "$m/dev/stderr"
mkdir "$m/dev/pts" "$m/dev/shm"
# /run and /tmp start empty as on every boot; they are per-run host directories
# rather than tmpfs so that their files stay readable after the run.
mount --bind "$out/run" "$m/run" || die "cannot mount /run"
mount --bind "$out/tmp" "$m/tmp" || die "cannot mount /tmp"
# The new UTS namespace starts with the host's name; a fresh image says localhost.
echo localhost >/proc/sys/kernel/hostname

# The files to place before boot wait under /run; written from inside the guest
# so that paths resolve through the guest's own symbolic links.
# shellcheck disable=SC2016 # expanded by the guest's shell
chroot "$m" /bin/sh -c '
	seed=/run/kubevirt-imds/seed
	while IFS="	" read -r n mode path; do
		mkdir -p "$(dirname "$path")" && cat "$seed/$n" >"$path" && chmod "$mode" "$path" ||
			{ echo "cannot write $path" >&2; exit 1; }
	done <"$seed/list"
	rm -rf "$seed"' || die "cannot place the seed files"

# PID 1 of a real guest brings the loopback up before any service runs.
chroot "$m" ip link set lo up || die "cannot bring lo up"

stage() {
	name=$1 t=$2
	shift 2
	start=$(now_ms)
	timeout -k 5 "$t" chroot "$m" "$@" >"$out/stages/$name.log" 2>&1 </dev/null
	rc=$?
	printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(now_ms) - start))" >>"$out/stages.tsv"
	say "$name: exit $rc"
	return $rc
}

networkd=
start_networkd() {
	chroot "$m" /usr/lib/systemd/systemd-networkd >>"$out/networkd.log" 2>&1 </dev/null &
	networkd=$!
}
networkd_config() { cat "$m"/run/systemd/network/* 2>/dev/null | cksum; }
# netplan matches "macaddress" as PermanentMACAddress=. A VM's virtio NIC has a
# permanent MAC equal to its MAC; the veth standing in for it has none, so
# nothing would match: match the current MAC instead, which is the same thing
# for the NIC a guest boots with.
networkd_match_mac() { sed -i 's/^PermanentMACAddress=/MACAddress=/' "$m"/run/systemd/network/*.network 2>/dev/null; }

t=$GUEST_STAGE_TIMEOUT
# systemd runs cloud-init's generator first: ds-identify narrows datasource_list
# to what the platform shows, or disables cloud-init when it finds nothing.
# It reads DMI only from sysfs, which this host lacks: it is pointed at the same
# strings in files, through the variable ds-identify's own tests use.
mkdir -p "$m/run/systemd/generator" "$m/run/systemd/generator.early" "$m/run/systemd/generator.late"
stage generator "$t" env PATH_SYS_CLASS_DMI_ID=/run/kubevirt-imds/dmi \
	/usr/lib/systemd/system-generators/cloud-init-generator \
	/run/systemd/generator /run/systemd/generator.early /run/systemd/generator.late
if [ -e "$m/run/cloud-init/disabled" ]; then
	say "ds-identify found no datasource: cloud-init stays disabled, as on a real boot"
	GUEST_GENERATION=disabled
else
	stage init-local "$t" cloud-init init --local
fi
case $GUEST_GENERATION in
bookworm)
	# networking.service: ifup -a over the ENI cloud-init rendered.
	mkdir -p "$m/run/network"
	stage network "$t" ifup -a
	stage init "$t" cloud-init init
	;;
trixie)
	# The netplan generator has run before systemd-networkd starts, and
	# cloud-init's net stage waits for systemd-networkd-wait-online.
	chroot "$m" netplan generate >"$out/stages/netplan-generate.log" 2>&1
	networkd_match_mac
	before=$(networkd_config)
	start_networkd
	stage network "$t" /usr/lib/systemd/systemd-networkd-wait-online --timeout="$t"
	stage init "$t" cloud-init init
	networkd_match_mac
	# cloud-init's netplan apply regenerates the networkd files, but its
	# systemctl calls are no-ops in a chroot: restart systemd-networkd, as
	# netplan apply does on a booted system, when the configuration changed.
	if [ "$(networkd_config)" != "$before" ]; then
		kill "$networkd"
		wait "$networkd"
		rm -rf "$m/run/systemd/netif"
		start_networkd
		stage networkd-restart "$t" /usr/lib/systemd/systemd-networkd-wait-online --timeout="$t"
	fi
	;;
disabled) ;;
*) die "unknown generation $GUEST_GENERATION" ;;
esac
if [ "$GUEST_GENERATION" != disabled ]; then
	stage modules-config "$t" cloud-init modules --mode config
	stage modules-final "$t" cloud-init modules --mode final
fi

timeout -k 5 "$t" chroot "$m" cloud-init status --long >"$out/status.txt" 2>&1 </dev/null
echo $? >"$out/status.rc"
timeout -k 5 "$t" chroot "$m" cloud-init query --all >"$out/query.json" 2>"$out/query.err" </dev/null
chroot "$m" ip addr >"$out/ip-addr.txt" 2>&1
chroot "$m" ip route >"$out/ip-route.txt" 2>&1
cat /proc/sys/kernel/hostname >"$out/hostname"
say "done"
`

// dmidecodeStub answers `dmidecode -s KEY` the way dmidecode does on a KubeVirt
// VM whose firmware and chassis carry s. cloud-init falls back to dmidecode
// because the host kernel offers no /sys/class/dmi.
func dmidecodeStub(s SMBIOS) string {
	keys := map[string]string{
		"system-manufacturer":   s.Manufacturer,
		"system-product-name":   s.Product,
		"system-version":        s.Version,
		"system-serial-number":  s.Serial,
		"system-uuid":           s.UUID,
		"system-family":         s.Family,
		"system-sku-number":     s.SKU,
		"chassis-manufacturer":  s.ChassisManufacturer,
		"chassis-version":       s.ChassisVersion,
		"chassis-serial-number": s.ChassisSerial,
		"chassis-asset-tag":     s.ChassisAsset,
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# kubevirt-imds test guest: the SMBIOS strings of a KubeVirt VM, as dmidecode -s reports them.
key=
while [ $# -gt 0 ]; do
	case $1 in
	-s | --string) key=$2; shift 2 ;;
	--string=*) key=${1#--string=}; shift ;;
	*) shift ;;
	esac
done
case $key in
`)
	for _, k := range names {
		if keys[k] == "" {
			continue
		}
		fmt.Fprintf(&b, "%s) printf '%%s\\n' %s ;;\n", k, shellQuote(keys[k]))
	}
	b.WriteString("esac\n")
	return b.String()
}

// detectVirtStub stands in for systemd-detect-virt: cloud-init 25 reads SMBIOS
// only on a VM, and this harness runs inside a container host.
const detectVirtStub = `#!/bin/sh
# kubevirt-imds test guest: answers as on a KVM virtual machine.
quiet=
for a; do
	case $a in
	-c | --container) [ -n "$quiet" ] || echo none; exit 1 ;;
	-r | --chroot | --private-users | --cvm) exit 1 ;;
	-q | --quiet) quiet=1 ;;
	esac
done
[ -n "$quiet" ] || echo kvm
`

// cloudConfig keeps a tier-1 guest's cloud-init off the host's disks and locale
// tooling (`locale: false` would be nicer but fails 22.4's schema validation),
// and skips SSH host keys: the trees have no OpenSSH, and 25.x counts the
// failed key generation as a warning (status degraded).
const cloudConfig = `# kubevirt-imds test guest: no disks to grow, no locale to generate, no sshd.
resize_rootfs: false
growpart:
  mode: "off"
locale: C.UTF-8
ssh_genkeytypes: []
`

// dmiFiles maps the sysfs DMI attribute names (as under /sys/class/dmi/id)
// that ds-identify reads to their values in s.
func dmiFiles(s SMBIOS) map[string]string {
	return map[string]string{
		"sys_vendor":        s.Manufacturer,
		"product_name":      s.Product,
		"product_version":   s.Version,
		"product_serial":    s.Serial,
		"product_uuid":      s.UUID,
		"product_family":    s.Family,
		"product_sku":       s.SKU,
		"chassis_vendor":    s.ChassisManufacturer,
		"chassis_version":   s.ChassisVersion,
		"chassis_serial":    s.ChassisSerial,
		"chassis_asset_tag": s.ChassisAsset,
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
