//go:build linux

package vm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
	"github.com/kubevirt-imds/kubevirt-imds/test/vm"
)

// nocloudSerial is the SMBIOS serial that seeds NoCloud over HTTP cleanly on
// both cloud-init generations (see test/guest).
const nocloudSerial = "ds=nocloud;s=http://169.254.169.254/nocloud/;dsmode=net"

// writtenFile is where the user-data writes, and final-stage runcmd
// appends, to prove both stages ran.
const writtenFile = "/var/lib/kubevirt-imds-test/written"

// userData is a #cloud-config that writes writtenFile.
func userData(instanceID string) string {
	return fmt.Sprintf(`#cloud-config
write_files:
  - path: %[1]s
    content: |
      written by user-data for %[2]s
runcmd:
  - [sh, -c, "echo runcmd ran >> %[1]s"]
`, writtenFile, instanceID)
}

// specTimeout covers a cold image build (minutes) and a TCG boot on a
// machine other work keeps busy.
const specTimeout = 25 * time.Minute

var _ = Describe("a VM in a virt-launcher-like Pod", Label("vm", "sidecar"), func() {
	It("boots with cloud-init seeded by the real sidecar over NoCloud", func(ctx SpecContext) {
		img := imageFor(ctx)

		// The Pod as virt-handler leaves it for a masquerade VMI: k6t-eth0
		// with tap0, and KubeVirt's DHCP (dnsmasq here) for the VM's MAC.
		pod := podnet.NewPod(GinkgoT())
		pod.PlumbTap(GinkgoT(), podnet.Masquerade)
		pod.ServeDHCP(GinkgoT())
		doc := operatorDocument("vm-nocloud", pod.GuestMAC.String(), userData)
		s := startSidecar(ctx, pod, doc)

		machine, err := vm.Boot(ctx, vm.Config{
			Image:   img,
			NetNS:   pod.Name,
			Tap:     "tap0",
			MAC:     pod.GuestMAC,
			SMBIOS:  vm.KubeVirtSMBIOS(nocloudSerial, doc.Instance.ID),
			WorkDir: GinkgoT().TempDir(),
			Log:     GinkgoWriter,
		})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func(ctx context.Context) {
			Expect(machine.Stop(ctx)).To(Succeed())
		}, NodeTimeout(time.Minute))

		// qemu's memory, sampled through the boot: TCG's translation cache
		// is capped, so the peak stays well under the guest's 1 GiB plus
		// qemu's default 1 GiB cache.
		peakRSS := make(chan int64, 1)
		sampleCtx, stopSampling := context.WithCancel(ctx)
		go func() {
			var peak int64
			defer func() { peakRSS <- peak }()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				if rss, err := machine.RSS(); err == nil && rss > peak {
					peak = rss
				}
				select {
				case <-sampleCtx.Done():
					return
				case <-machine.Exited():
					return
				case <-tick.C:
				}
			}
		}()

		datasource, err := machine.WaitCloudInit(ctx)
		bootTime := time.Since(machine.Started)
		Expect(err).NotTo(HaveOccurred())
		stopSampling()
		rss := <-peakRSS
		summary := fmt.Sprintf("VM BOOT %s (kernel %s, %s): cloud-init final after %v (guest uptime %s), %s; qemu peak RSS %d MiB",
			img.Suite, img.KernelVersion, img.CloudInit, bootTime.Round(100*time.Millisecond),
			machine.CloudInitUptime(), datasource, rss>>20)
		AddReportEntry("boot", summary)
		GinkgoWriter.Println(summary)
		Expect(datasource).To(Equal("DataSourceNoCloudNet"))
		Expect(rss).To(BeNumerically("<", 900<<20), "qemu's RSS")

		// What a user checks on the VM's console.
		run := func(command string) string {
			GinkgoHelper()
			out, exit, err := machine.Run(ctx, command)
			Expect(err).NotTo(HaveOccurred())
			Expect(exit).To(Equal(0), "%s:\n%s", command, out)
			return out
		}
		status, exit, err := machine.CloudInitStatus(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(exit).To(Equal(0), status)
		Expect(status).To(MatchRegexp(`(?m)^status: done$`))
		Expect(status).To(MatchRegexp(`(?m)^detail:\s*\n?\s*DataSourceNoCloudNet`))

		Expect(strings.TrimSpace(run("cloud-init query instance_id"))).To(Equal(doc.Instance.ID))
		Expect(strings.TrimSpace(run("hostname"))).To(Equal(doc.Instance.Hostname))
		Expect(run("cat " + writtenFile)).To(Equal("written by user-data for " + doc.Instance.ID + "\nruncmd ran\n"))
		// The firmware strings as KubeVirt sets them.
		Expect(strings.TrimSpace(run("cat /sys/class/dmi/id/product_serial"))).To(Equal(nocloudSerial))
		Expect(strings.TrimSpace(run("cat /sys/class/dmi/id/sys_vendor /sys/class/dmi/id/product_name"))).To(Equal("KubeVirt\nNone"))

		// KubeVirt's masquerade DHCP address and gateway, held as a lease.
		Expect(run("ip -4 -o addr show")).To(MatchRegexp(`inet ` + regexp.QuoteMeta(podnet.MasqueradeGuestAddr) + `/24 .*dynamic`))
		Expect(run("ip -4 route show default")).To(ContainSubstring("default via " + podnet.MasqueradeGatewayAddr))

		// The metadata service from the guest, in the project's own dialect.
		identity := run("curl -sf -H 'Metadata: true' http://169.254.169.254/v1/identity")
		var id struct {
			InstanceID string `json:"instanceId"`
			Hostname   string `json:"hostname"`
		}
		Expect(json.Unmarshal([]byte(identity), &id)).To(Succeed(), identity)
		Expect(id.InstanceID).To(Equal(doc.Instance.ID))
		Expect(id.Hostname).To(Equal(doc.Instance.Hostname))
		// Without the header the dialect refuses, as it must for a browser-like client.
		_, exit, err = machine.Run(ctx, "curl -sf http://169.254.169.254/v1/identity")
		Expect(err).NotTo(HaveOccurred())
		Expect(exit).NotTo(Equal(0))

		// The seed came from the sidecar, to the guest's DHCP address.
		Expect(s.Answered(podnet.MasqueradeGuestAddr)).To(ContainElements(
			"/nocloud/meta-data", "/nocloud/user-data", "/v1/identity"))
	}, SpecTimeout(specTimeout))
})
