//go:build e2e

package cluster_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gmeasure"

	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
)

// benchUserData is the cloud-config both kinds of VM in the benchmark get:
// the same work for cloud-init, whichever way it arrives.
const benchUserData = `#cloud-config
write_files:
- path: /etc/motd
  content: "Configured by kubevirt-imds\n"
`

// benchRounds is how many VMs of each kind the benchmark boots, alternating.
const benchRounds = 3

// nodeFootprint runs $NODE_FOOTPRINT (make bench-cluster sets it to
// `cluster.sh footprint`) and returns its line, or "" where it is not set.
func nodeFootprint(ctx context.Context) string {
	GinkgoHelper()
	cmd := os.Getenv("NODE_FOOTPRINT")
	if cmd == "" {
		return ""
	}
	out, err := exec.CommandContext(ctx, "sh", "-c", cmd).Output()
	Expect(err).NotTo(HaveOccurred(), "NODE_FOOTPRINT=%s", cmd)
	return strings.TrimSpace(string(out))
}

var _ = Describe("time from creating a VirtualMachine to cloud-init done", Label("bench"), func() {
	It("through kubevirt-imds, and with KubeVirt's own cloudInitNoCloud volume, alternating", func(ctx SpecContext) {
		const ns = "imds-e2e-bench"
		newNamespace(ctx, ns, nil)
		By("the sample MetadataService with the benchmark's user-data")
		var mds imdsv1alpha1.MetadataService
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &mds)).To(Succeed())
		// A patch, not an update: the operator patches the status of the
		// service it has just been given, which moves its resourceVersion.
		before := mds.DeepCopy()
		mds.Spec.UserData.Inline = new(benchUserData)
		Expect(k8sClient.Patch(ctx, &mds, client.MergeFrom(before))).To(Succeed())

		idle := nodeFootprint(ctx)
		exp := gmeasure.NewExperiment("create VirtualMachine → cloud-init done (Debian trixie, software emulation)")
		AddReportEntry(exp.Name, exp)
		keys := readSampleKeys()
		var withVM string
		for i := range benchRounds {
			for _, kind := range []string{"kubevirt-imds", "cloudInitNoCloud"} {
				vm := debianVM(ns, fmt.Sprintf("%s-%d", strings.ToLower(kind), i))
				want := "NoCloudNet"
				if kind == "cloudInitNoCloud" {
					// Not selected by the service: KubeVirt's own NoCloud disk.
					vm.Spec.Template.ObjectMeta.Labels = map[string]string{"app": "plain"}
					vm.Spec.Template.Spec.Domain.Devices.Disks = append(vm.Spec.Template.Spec.Domain.Devices.Disks, kubevirtv1.Disk{
						Name: "cloudinitdisk", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}},
					})
					vm.Spec.Template.Spec.Volumes = append(vm.Spec.Template.Spec.Volumes, kubevirtv1.Volume{
						Name: "cloudinitdisk",
						VolumeSource: kubevirtv1.VolumeSource{CloudInitNoCloud: &kubevirtv1.CloudInitNoCloudSource{
							UserData: benchUserData + "ssh_authorized_keys:\n" + keys,
						}},
					})
					want = "DataSourceNoCloud "
				}
				created := time.Now()
				Expect(k8sClient.Create(ctx, vm)).To(Succeed())
				vmi, _ := runningVMI(ctx, ns, vm.Name, "")
				g := bootedGuest(ctx, ns, vm.Name, created)
				f := g.Boot()
				Expect(f.Status).To(Equal("status: done"), "%s: cloud-init's status", vm.Name)
				Expect(f.Datasource).To(ContainSubstring(want), vm.Name)
				Expect(g.ReadFile(ctx, "/etc/motd")).To(Equal("Configured by kubevirt-imds\n"), vm.Name)
				exp.RecordDuration(kind, f.Duration)
				GinkgoWriter.Printf("%s: cloud-init done %s after create (%s)\n", vmi.Name, f.Duration.Round(100*time.Millisecond), f.Datasource)
				if withVM == "" && kind == "kubevirt-imds" {
					withVM = nodeFootprint(ctx)
				}
				Expect(g.Close()).To(Succeed())
				deleteVM(ctx, vm)
			}
		}
		ours := exp.GetStats("kubevirt-imds").DurationFor(gmeasure.StatMedian)
		theirs := exp.GetStats("cloudInitNoCloud").DurationFor(gmeasure.StatMedian)
		AddReportEntry("median ratio kubevirt-imds / cloudInitNoCloud", fmt.Sprintf("%.2f (%s / %s)", ours.Seconds()/theirs.Seconds(), ours.Round(100*time.Millisecond), theirs.Round(100*time.Millisecond)))
		if idle != "" {
			AddReportEntry("node memory", fmt.Sprintf("idle (KubeVirt and the operator installed, no VM): %s; with one VM served: %s", idle, withVM))
		}
	}, SpecTimeout(60*time.Minute))
})

// readSampleKeys is the sample MetadataService's SSH keys as a YAML list.
func readSampleKeys() string {
	GinkgoHelper()
	mds, err := guestspecs.ReadSampleService()
	Expect(err).NotTo(HaveOccurred())
	Expect(mds.Spec.SSHAuthorizedKeys).NotTo(BeNil())
	var b strings.Builder
	for _, k := range mds.Spec.SSHAuthorizedKeys.Inline {
		fmt.Fprintf(&b, "- %s\n", k)
	}
	return b.String()
}
