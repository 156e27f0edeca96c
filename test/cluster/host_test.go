//go:build cluster

package cluster_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// The names and addresses of hack/cluster/lib.sh, repeated here on purpose:
// the test checks the scripts against what docs/cluster.md promises.
const (
	kubeContext   = "kubevirt-imds-local"
	nodeName      = "kvimds-node"
	nodeLink      = "kvimds-node"
	peerLink      = "kvimds-peer"
	bridge        = "kvimds-br0"
	podCIDR       = "10.213.0.0/24"
	serviceCIDR   = "10.213.128.0/24"
	cgroupRoot    = "kubevirt-imds"
	kubeletRoot   = "/var/lib/kubelet"
	testImage     = "kubevirt-imds.local/testserver:v1"
	netnsDir      = "/run/netns"
	clusterScript = "hack/cluster/cluster.sh"
)

// sysctls are the values the kubelet, the bridge plugin or kube-proxy may
// change.
var sysctls = []string{
	"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
	"net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.ipv4.conf.default.forwarding",
	"net.ipv6.conf.all.forwarding", "net.ipv6.conf.default.forwarding",
	"net.ipv4.conf.all.route_localnet",
	"net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait",
	"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
}

// watchedPaths are fixed paths a kubelet, containerd, CNI or the control plane
// may write outside the state directory.
var watchedPaths = []string{
	kubeletRoot, "/var/lib/cni", "/var/log/containers", "/var/log/pods",
	"/run/containerd", "/run/kubernetes", "/etc/kubernetes", "/etc/cni", "/opt/cni",
	"/var/lib/containerd", "/opt/containerd", "/var/lib/etcd", "/root/.kube",
}

// listedDirs are directories whose entries are compared before and after, to
// catch a write outside the state directory that no list above names.
var listedDirs = []string{"/run", "/var/lib", "/var/log", "/etc", "/opt", "/var/run"}

// hostState is what the cluster may change on the host, read independently of
// the scripts.
type hostState struct {
	links     []string
	nftTables []string
	nftKube   []string // lines of the ruleset naming KUBE- or kube-proxy
	iptKube   []string // iptables-save / ip6tables-save lines naming KUBE-
	mounts    []string // under the state dir and the kubelet root, Pods' netns
	netns     []string // /run/netns/cni-*
	sysctls   map[string]string
	paths     map[string]bool
	entries   map[string][]string
	cgroups   []string
	processes []string
}

func snapshotHost(stateDir string) hostState {
	s := hostState{sysctls: map[string]string{}, paths: map[string]bool{}, entries: map[string][]string{}}
	s.links = linkNames()
	s.nftTables = lines(run("nft", "list", "tables"))
	for _, l := range lines(run("nft", "list", "ruleset")) {
		if strings.Contains(l, "KUBE-") || strings.Contains(l, "kube-proxy") {
			s.nftKube = append(s.nftKube, strings.TrimSpace(l))
		}
	}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(cmd); err != nil {
			continue
		}
		for _, l := range lines(run(cmd)) {
			if strings.Contains(l, "KUBE-") {
				s.iptKube = append(s.iptKube, cmd+": "+l)
			}
		}
	}
	s.mounts = clusterMounts(stateDir)
	s.netns, _ = filepath.Glob(filepath.Join(netnsDir, "cni-*"))
	for _, k := range sysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))); err == nil {
			s.sysctls[k] = strings.TrimSpace(string(v))
		}
	}
	for _, p := range watchedPaths {
		_, err := os.Lstat(p)
		s.paths[p] = err == nil
	}
	for _, d := range listedDirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			s.entries[d] = append(s.entries[d], e.Name())
		}
	}
	for _, pat := range []string{"/sys/fs/cgroup/*/" + cgroupRoot, "/sys/fs/cgroup/*/kubepods*"} {
		m, _ := filepath.Glob(pat)
		s.cgroups = append(s.cgroups, m...)
	}
	s.processes = clusterProcesses(stateDir)
	return s
}

func linkNames() []string {
	var names []string
	for _, l := range lines(run("ip", "-o", "link", "show")) {
		f := strings.SplitN(l, ": ", 3)
		if len(f) >= 2 {
			names = append(names, strings.SplitN(f[1], "@", 2)[0])
		}
	}
	sort.Strings(names)
	return names
}

// bridgePorts lists the links enslaved to the cluster's bridge: the Pods'
// host-side veths.
func bridgePorts() []string {
	out, err := exec.Command("ip", "-o", "link", "show", "master", bridge).Output()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range lines(string(out)) {
		f := strings.SplitN(l, ": ", 3)
		if len(f) >= 2 {
			names = append(names, strings.SplitN(f[1], "@", 2)[0])
		}
	}
	return names
}

func clusterMounts(stateDir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := strings.ReplaceAll(fields[4], `\040`, " ")
		if under(m, stateDir) || under(m, kubeletRoot) || strings.HasPrefix(m, netnsDir+"/cni-") {
			mounts = append(mounts, m)
		}
	}
	sort.Strings(mounts)
	return mounts
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// clusterProcesses lists the node's programs that name the state directory
// (every component and shim does), and every process in the cluster's cgroups.
func clusterProcesses(stateDir string) []string {
	var procs []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err != nil || !strings.Contains(string(b), stateDir+"/") {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join(filepath.Dir(c), "comm"))
		switch strings.TrimSpace(string(comm)) {
		case "containerd", "containerd-shim", "etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kubelet", "kube-proxy":
			procs = append(procs, filepath.Base(filepath.Dir(c))+" "+strings.TrimSpace(string(comm)))
		}
	}
	tasks, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupRoot)
	for _, t := range tasks {
		_ = filepath.Walk(t, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(p)
				for _, pid := range strings.Fields(string(b)) {
					procs = append(procs, pid+" in "+filepath.Dir(p))
				}
			}
			return nil
		})
	}
	return procs
}

func run(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// minus returns the elements of a that are not in b.
func minus(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

// diffEntries describes the directory entries that appeared or vanished.
func diffEntries(before, after map[string][]string) []string {
	var d []string
	for _, dir := range listedDirs {
		for _, e := range minus(after[dir], before[dir]) {
			d = append(d, fmt.Sprintf("+%s/%s", dir, e))
		}
		for _, e := range minus(before[dir], after[dir]) {
			d = append(d, fmt.Sprintf("-%s/%s", dir, e))
		}
	}
	return d
}
