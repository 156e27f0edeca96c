// Package vm boots real virtual machines for tests ("tier 2" guests): a
// Debian cloud image built from Debian packages (hack/guest-vm-image.sh)
// runs under qemu with software emulation (TCG), inside a virt-launcher-like
// Pod network namespace, with its NIC on a tap device enslaved to KubeVirt's
// bridge and the SMBIOS strings a KubeVirt VM carries. cloud-init in the VM
// then finds its datasource exactly as it would on a cluster: from the
// SMBIOS serial or chassis asset tag, over DHCP and the Pod's network.
//
// EnsureImage builds (or finds in tmp/guest-vm/) the image; Boot starts a VM
// on a throw-away overlay of it; the VM's serial console is both its log
// (ConsoleLog, WaitFor, WaitCloudInit) and a root shell that tests type
// commands into (Run). Stop kills the VM and deletes its overlay.
//
// A caller owns the network, as virt-handler does for virt-launcher: the Pod
// namespace with the bridge and the tap (test/podnet's PlumbTap), DHCP
// (podnet's ServeDHCP) and whatever serves 169.254.169.254.
//
// Everything needs root, qemu-system-x86_64 and qemu-img, on Linux. /dev/kvm
// is not used (the machines this runs on cannot boot a stock kernel with it):
// under TCG a VM with one vCPU (Config.CPUs says why not two) reaches
// cloud-init's final stage in about a minute on an idle two-core machine,
// and in two to three minutes when other work keeps it busy. The package's own tests check the console protocol
// without qemu; test/e2e/hermetic and `make demo DEMO_GUEST=vm` boot VMs.
package vm
