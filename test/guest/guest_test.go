//go:build linux

package guest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
)

// nocloudSerial is the SMBIOS serial that seeds NoCloud over HTTP cleanly on
// both generations: 22.4 drops an HTTP seed without dsmode=net, and 25.x
// reports the older "nocloud-net" spelling as deprecated (exit 2).
const nocloudSerial = "ds=nocloud;s=http://169.254.169.254/nocloud/;dsmode=net"

// writtenFile is where the specs' user-data writes, and final-stage runcmd
// appends, to prove both stages ran.
const writtenFile = "/var/lib/kubevirt-imds-test/written"

// nocloudFiles is a NoCloud seed for one instance: meta-data, a #cloud-config
// user-data that writes writtenFile, and a v2 network-config for the NIC mac.
func nocloudFiles(instanceID, hostname, mac string) map[string]string {
	return map[string]string{
		"/nocloud/meta-data": fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", instanceID, hostname),
		"/nocloud/user-data": fmt.Sprintf(`#cloud-config
write_files:
  - path: %[1]s
    content: |
      written by user-data for %[2]s
runcmd:
  - [sh, -c, "echo runcmd ran >> %[1]s"]
`, writtenFile, instanceID),
		"/nocloud/vendor-data": "",
		// A static configuration that DHCP could not have produced (route
		// metric 77), so seeing it applied proves the served file was used.
		"/nocloud/network-config": fmt.Sprintf(`version: 2
ethernets:
  eth0:
    match:
      macaddress: "%s"
    set-name: eth0
    dhcp4: false
    addresses: [%s/24]
    routes:
      - to: 0.0.0.0/0
        via: %s
        metric: 77
`, mac, guestAddr, gatewayAddr),
	}
}

// openstackFiles is a nova metadata tree (and the EC2-compatible subset
// cloud-init's OpenStack datasource also reads) for one instance, with a static
// network_data.json that DHCP could not have produced.
func openstackFiles(instanceID, hostname, mac string) map[string]string {
	metaData, err := json.Marshal(map[string]any{
		"uuid": instanceID, "name": hostname, "hostname": hostname,
		"availability_zone": "kubevirt", "project_id": "default", "launch_index": 0,
		"keys": []any{}, "public_keys": map[string]string{}, "meta": map[string]string{}, "devices": []any{},
	})
	Expect(err).NotTo(HaveOccurred())
	networkData, err := json.Marshal(map[string]any{
		"links": []any{map[string]any{"id": "tap0", "type": "phy", "ethernet_mac_address": mac, "mtu": 1500}},
		"networks": []any{map[string]any{
			"id": "network0", "link": "tap0", "type": "ipv4", "network_id": "pod",
			"ip_address": guestAddr, "netmask": "255.255.255.0",
			"routes": []any{map[string]any{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gatewayAddr}},
		}},
		"services": []any{},
	})
	Expect(err).NotTo(HaveOccurred())
	files := map[string]string{
		"/openstack":                          "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n2017-02-22\n2018-08-27\nlatest",
		"/openstack/latest/meta_data.json":    string(metaData),
		"/openstack/latest/network_data.json": string(networkData),
		"/openstack/latest/vendor_data.json":  "{}",
		"/openstack/latest/vendor_data2.json": "{}",
		"/openstack/latest/user_data":         nocloudFiles(instanceID, hostname, mac)["/nocloud/user-data"],
	}
	for _, v := range []string{"latest", "2009-04-04"} {
		files["/"+v+"/meta-data/"] = "instance-id\nlocal-hostname\nhostname"
		files["/"+v+"/meta-data/instance-id"] = instanceID
		files["/"+v+"/meta-data/local-hostname"] = hostname
		files["/"+v+"/meta-data/hostname"] = hostname
	}
	return files
}

// reportRun records a boot's timings in the spec report.
func reportRun(res *guest.Result) {
	var b strings.Builder
	fmt.Fprintf(&b, "%v total:", res.Duration.Round(time.Millisecond))
	for _, s := range res.Stages {
		fmt.Fprintf(&b, " %s %v;", s.Name, s.Duration)
	}
	AddReportEntry(fmt.Sprintf("%s boot (%s)", res.Generation, res.CloudInit), b.String())
}

// specTimeout leaves room for a cold build of a guest tree (minutes on a busy
// machine) on top of a boot (seconds).
const specTimeout = 20 * time.Minute

var _ = Describe("a tier-1 guest", Label("guest"), func() {
	for _, gen := range guest.Generations {
		Context("on "+string(gen), func() {
			It("reaches done over NoCloud seeded by the SMBIOS serial", func(ctx SpecContext) {
				root := rootFor(ctx, gen)
				pod := newPodNetwork(ctx)
				instanceID := "i-" + randomHex(6)
				hostname := "tier1-" + string(gen)
				md := serveMetadata(pod.Pod, nocloudFiles(instanceID, hostname, pod.GuestMAC))

				res, err := guest.Run(ctx, guest.Config{
					Root:   root,
					NetNS:  pod.Guest,
					SMBIOS: guest.KubeVirtSMBIOS(nocloudSerial, "3a3d2b0e-8e1c-4f5f-a0a4-"+randomHex(6)),
					Files:  map[string]string{"/etc/kubevirt-imds-test/placed": "placed before boot\n"},
					Log:    GinkgoWriter,
				})
				Expect(err).NotTo(HaveOccurred())
				DeferCleanup(res.Close)
				reportRun(res)

				Expect(res.StatusCode).To(Equal(0), res.Report())
				Expect(res.Status).To(ContainSubstring("done"))
				Expect(res.Errors).To(BeEmpty())
				Expect(res.Datasource).To(Equal("DataSourceNoCloudNet"), res.Report())
				Expect(res.DatasourceDetail).To(ContainSubstring("http://169.254.169.254/nocloud/"))
				Expect(res.InstanceID).To(Equal(instanceID))
				Expect(res.LocalHostname).To(Equal(hostname))
				Expect(res.Hostname).To(Equal(hostname))
				hostnameFile, err := res.ReadFile("/etc/hostname")
				Expect(err).NotTo(HaveOccurred())
				Expect(strings.TrimSpace(string(hostnameFile))).To(Equal(hostname))

				written, err := res.ReadFile(writtenFile)
				Expect(err).NotTo(HaveOccurred(), res.Report())
				Expect(string(written)).To(Equal("written by user-data for " + instanceID + "\nruncmd ran\n"))

				placed, err := res.ReadFile("/etc/kubevirt-imds-test/placed")
				Expect(err).NotTo(HaveOccurred())
				Expect(string(placed)).To(Equal("placed before boot\n"))
				_, err = res.ReadFile("/etc/kubevirt-imds-test/never-written")
				Expect(err).To(MatchError(fs.ErrNotExist))

				Expect(md.Requests()).To(ContainElements("/nocloud/meta-data", "/nocloud/user-data"))
				Expect(res.IPAddr).To(ContainSubstring("inet " + guestAddr + "/24"))
				switch gen {
				case guest.Bookworm:
					// 22.4 never fetches network-config: it keeps its DHCP
					// fallback, rendered as ENI and brought up by ifup.
					Expect(md.Requests()).NotTo(ContainElement("/nocloud/network-config"))
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/network/interfaces.d/50-cloud-init",
						ContainSubstring("iface eth0 inet dhcp")))
					Expect(res.IPRoute).To(ContainSubstring("default via " + gatewayAddr + " dev eth0"))
				case guest.Trixie:
					// 25.x fetches network-config and renders it as netplan,
					// which systemd-networkd applied.
					Expect(md.Requests()).To(ContainElement("/nocloud/network-config"))
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/netplan/50-cloud-init.yaml",
						And(ContainSubstring(guestAddr+"/24"), ContainSubstring("metric: 77"))))
					Expect(res.Stage("networkd-restart")).NotTo(BeNil(), res.Report())
					Expect(res.IPRoute).To(MatchRegexp(`default via ` + gatewayAddr + ` dev eth0 proto static metric 77`))
				}
			}, SpecTimeout(specTimeout))

			if gen == guest.Bookworm {
				It("renders the legacy network-interfaces meta-data key, the only network config 22.4 takes over NoCloud HTTP, for the next boot", func(ctx SpecContext) {
					root := rootFor(ctx, gen)
					pod := newPodNetwork(ctx)
					instanceID := "i-" + randomHex(6)
					files := nocloudFiles(instanceID, "tier1-eni", pod.GuestMAC)
					files["/nocloud/meta-data"] += "network-interfaces: |\n" +
						"  auto eth0\n" +
						"  iface eth0 inet static\n" +
						"    address " + guestAddr + "/24\n" +
						"    gateway " + gatewayAddr + "\n"
					serveMetadata(pod.Pod, files)

					res, err := guest.Run(ctx, guest.Config{Root: root, NetNS: pod.Guest,
						SMBIOS: guest.KubeVirtSMBIOS(nocloudSerial, ""), Log: GinkgoWriter})
					Expect(err).NotTo(HaveOccurred())
					DeferCleanup(res.Close)
					reportRun(res)

					Expect(res.StatusCode).To(Equal(0), res.Report())
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/network/interfaces.d/50-cloud-init",
						And(ContainSubstring("iface eth0 inet static"), ContainSubstring(guestAddr))), res.Report())
					// Rendered in the net stage, after ifup already took a DHCP
					// lease for the fetch: cloud-init's `ifup eth0` finds eth0
					// configured, so the static address only takes effect on the
					// next boot.
					Expect(res.IPAddr).To(MatchRegexp(`inet ` + guestAddr + `/24 brd \S+ scope global dynamic eth0`))
					Expect(res.CloudInitLog).To(ContainSubstring("ifup: interface eth0 already configured"))
				}, SpecTimeout(specTimeout))
			}

			It("reaches done over OpenStack, identified by the chassis asset tag", func(ctx SpecContext) {
				root := rootFor(ctx, gen)
				pod := newPodNetwork(ctx)
				instanceID := "3a3d2b0e-8e1c-4f5f-a0a4-" + randomHex(6)
				hostname := "tier1-os-" + string(gen)
				md := serveMetadata(pod.Pod, openstackFiles(instanceID, hostname, pod.GuestMAC))
				smbios := guest.KubeVirtSMBIOS("", instanceID)
				smbios.ChassisAsset = "OpenStack Nova"

				res, err := guest.Run(ctx, guest.Config{Root: root, NetNS: pod.Guest, SMBIOS: smbios, Log: GinkgoWriter})
				Expect(err).NotTo(HaveOccurred())
				DeferCleanup(res.Close)
				reportRun(res)

				Expect(res.StatusCode).To(Equal(0), res.Report())
				// Identified locally, it fetches metadata in init-local over an
				// ephemeral DHCP lease, before the guest's own networking.
				Expect(res.Datasource).To(Equal("DataSourceOpenStackLocal"), res.Report())
				Expect(res.InstanceID).To(Equal(instanceID))
				Expect(res.Hostname).To(Equal(hostname))
				written, err := res.ReadFile(writtenFile)
				Expect(err).NotTo(HaveOccurred(), res.Report())
				Expect(string(written)).To(Equal("written by user-data for " + instanceID + "\nruncmd ran\n"))
				Expect(md.Requests()).To(ContainElement(MatchRegexp(`^/openstack/[^/]+/network_data\.json$`)))

				// network_data.json's static address and route, rendered and applied.
				Expect(res.IPAddr).To(MatchRegexp(`inet ` + guestAddr + `/24 brd \S+ scope global eth0`))
				Expect(res.IPAddr).NotTo(ContainSubstring("dynamic"))
				Expect(res.IPRoute).To(ContainSubstring("default via " + gatewayAddr))
				switch gen {
				case guest.Bookworm:
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/network/interfaces.d/50-cloud-init",
						And(ContainSubstring("iface eth0 inet static"), ContainSubstring(guestAddr))))
				case guest.Trixie:
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/netplan/50-cloud-init.yaml",
						ContainSubstring(guestAddr+"/24")))
				}
			}, SpecTimeout(specTimeout))
		})
	}
})

var _ = Describe("the tier-1 harness", Label("guest"), func() {
	It("leaves nothing behind when the boot is cut short", func(ctx SpecContext) {
		root := rootFor(ctx, guest.Bookworm)
		pod := newPodNetwork(ctx)
		// No metadata server: cloud-init would retry for minutes.
		work := GinkgoT().TempDir()
		short, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()

		res, err := guest.Run(short, guest.Config{
			// The path form of NetNS, as a namespace held by a process would be given.
			Root: root, NetNS: "/run/netns/" + pod.Guest, WorkDir: work, Log: GinkgoWriter,
			SMBIOS: guest.KubeVirtSMBIOS(nocloudSerial, ""),
		})
		Expect(err).To(MatchError(context.DeadlineExceeded))
		Expect(res).To(BeNil())

		Expect(os.ReadDir(work)).To(BeEmpty(), "the run's overlay and outputs are removed")
		Expect(ip(ctx, "netns", "pids", pod.Guest)).To(BeEmpty(), "no guest process survives")
		mounts, err := os.ReadFile("/proc/self/mountinfo")
		Expect(err).NotTo(HaveOccurred())
		Expect(string(mounts)).NotTo(ContainSubstring(work), "no mount leaks out of the guest")
	}, SpecTimeout(specTimeout))

	It("refuses what is not a network namespace", func(ctx SpecContext) {
		root := rootFor(ctx, guest.Bookworm)
		_, err := guest.Run(ctx, guest.Config{Root: root, NetNS: "kvimds-missing-" + randomHex(4)})
		Expect(err).To(MatchError(fs.ErrNotExist))
		_, err = guest.Run(ctx, guest.Config{Root: root, NetNS: "/etc/hostname"})
		Expect(err).To(MatchError(ContainSubstring("not a namespace file")))
		_, err = guest.Run(ctx, guest.Config{Root: root, NetNS: "relative/path"})
		Expect(err).To(MatchError(ContainSubstring("neither a network namespace name nor an absolute path")))
	}, SpecTimeout(specTimeout))
})
