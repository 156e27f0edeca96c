// Package guest runs real cloud-init, from a Debian guest root tree, inside Linux
// namespaces: "tier 1" guests that boot in seconds instead of a VM's minute,
// so tests can prove that a metadata service works with the cloud-init
// releases guests actually run.
//
// A caller owns the network: it creates the guest's network namespace with its
// NIC (named as the guest would see it, e.g. eth0) wired to whatever serves
// DHCP and 169.254.169.254, and passes the namespace (its name or path) in
// Config.NetNS. Run then boots cloud-init on a fresh overlay of a cached tree
// (see EnsureRoot), with the SMBIOS strings a KubeVirt VM would carry, and
// reports what cloud-init did. Everything needs root, on Linux.
//
// The specs in this package prove the harness against a stand-in metadata
// server (standin_test.go). Run them as root:
//
//	hack/guest-rootfs.sh                      # optional: build the trees up front
//	go test ./test/guest/ -v -timeout 30m     # -ginkgo.focus=trixie for one generation
//
// Without root they skip. A cold tree build takes minutes (see
// hack/guest-rootfs.sh); trees are cached outside the work tree.
package guest
