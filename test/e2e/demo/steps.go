//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/singlenode"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
	"github.com/kubevirt-imds/kubevirt-imds/test/vm"
)

const (
	totalSteps = 8
	namespace  = "demo"
	// The sample MetadataService and VMI (config/samples).
	sampleService = "web"
	sampleVMI     = "web-1"
	tokenFile     = guestspecs.TokenFile
	motdFile      = guestspecs.MotdFile
)

// waitTimeout bounds each wait for the operator.
const waitTimeout = 2 * time.Minute

// run runs the steps and prints the summary; it returns the exit code.
func (d *demo) run() int {
	d.start = time.Now()
	defer func() {
		if d.tb.pending() {
			fmt.Printf("\n==> cleaning up\n")
			d.tb.cleanup()
			fmt.Printf("    done; logs kept in %s\n", d.dir)
		}
	}()
	var (
		binaries controlplane.Binaries
		images   guestImages
		node     *singlenode.Node
		l        *singlenode.Launcher
		g        guestspecs.Guest
		summary  []string
	)
	ok := d.step("Install what is missing and build: Debian packages, the binaries, the guest", func() {
		t := time.Now()
		out, err := exec.CommandContext(d.ctx, filepath.Join(controlplane.RepoRoot(), "hack", "install-test-deps.sh")).CombinedOutput()
		d.fatal(err, "hack/install-test-deps.sh: "+string(out))
		fmt.Printf("    Debian packages present (%.1fs)\n", time.Since(t).Seconds())
		t = time.Now()
		binaries, err = controlplane.BuildBinaries(d.ctx, d.dir)
		d.fatal(err, "building")
		fmt.Printf("    the image's binaries (kubevirt-imds, kubevirt-imds-sidecar, kubevirt-imds-sidecar-netadmin) built in %s (%.1fs)\n", d.dir, time.Since(t).Seconds())
		t = time.Now()
		progress := d.logFile
		if d.guestKind == "vm" {
			var err error
			images.vm, err = vm.EnsureImage(d.ctx, progress)
			d.fatal(err, "building the VM image (hack/guest-vm-image.sh)")
			fmt.Printf("    VM image: Debian %s, kernel %s, %s, at %s (%.1fs)\n",
				images.vm.Suite, images.vm.KernelVersion, images.vm.CloudInit, images.vm.Dir, time.Since(t).Seconds())
			return
		}
		var err2 error
		images.root, err2 = guest.EnsureRoot(d.ctx, guest.Trixie, progress)
		d.fatal(err2, "building the Debian trixie guest tree (hack/guest-rootfs.sh)")
		fmt.Printf("    guest tree: Debian trixie with %s at %s (%.1fs)\n", images.root.CloudInit, images.root.Dir, time.Since(t).Seconds())
	})
	ok = ok && d.step("Start the control plane (kube-apiserver, etcd, KubeVirt CRDs) and the manager (controller + webhooks)", func() {
		node = singlenode.Start(d.tb, singlenode.Options{WorkDir: d.dir, Binaries: binaries, Log: d.log})
		fmt.Printf("    API server %s, kubeconfig %s\n", node.Config.Host, node.Kubeconfig)
		fmt.Printf("    manager running with webhooks on %s:%d (log %s)\n",
			node.Env.WebhookInstallOptions.LocalServingHost, node.Env.WebhookInstallOptions.LocalServingPort, node.ManagerLog())
	})
	ok = ok && d.step("Apply config/samples: MetadataService "+sampleService+" and VirtualMachineInstance "+sampleVMI, func() {
		node.NewNamespace(d.tb, d.ctx, namespace)
		objs, err := node.ApplyKustomization(d.ctx, filepath.Join(controlplane.RepoRoot(), "config", "samples"), namespace)
		d.fatal(err, "applying config/samples")
		for _, o := range objs {
			fmt.Printf("    created %s %s/%s\n", o.GetKind(), namespace, o.GetName())
		}
		var vmi kubevirtv1.VirtualMachineInstance
		d.fatal(node.Client.Get(d.ctx, types.NamespacedName{Namespace: namespace, Name: sampleVMI}, &vmi), "reading the VMI")
		if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.Serial != "" {
			fmt.Printf("    VMI webhook set the SMBIOS serial: %s\n", fw.Serial)
		} else {
			d.tb.Fatalf("the VMI webhook did not set the SMBIOS serial")
		}
		mds := d.waitReady(node)
		fmt.Printf("    MetadataService %s: Ready=%s, %d instance(s) selected\n", mds.Name,
			meta.FindStatusCondition(mds.Status.Conditions, imdsv1alpha1.ConditionReady).Status, mds.Status.SelectedInstances)
		var s corev1.Secret
		d.fatal(node.Client.Get(d.ctx, types.NamespacedName{Namespace: namespace, Name: imdsv1alpha1.PayloadSecretName(sampleVMI)}, &s), "reading the payload Secret")
		fmt.Printf("    payload Secret %s (owned by VMI %s)\n", s.Name, s.OwnerReferences[0].Name)
	})
	ok = ok && d.step("Create the virt-launcher Pod as virt-controller would; play kubelet: network namespace, volumes, sidecar; node agent", func() {
		l = node.Launch(d.tb, d.ctx, namespace, sampleVMI, plumbFor(d.guestKind))
		if !l.HasSidecar() {
			d.tb.Fatalf("the Pod webhook did not inject the sidecar into %s", l.Pod.Name)
		}
		fmt.Printf("    Pod %s admitted with the native sidecar %q (image %s)\n", l.Pod.Name, controllers.SidecarContainerName, singlenode.SidecarImage)
		for _, v := range l.Pod.Spec.Volumes {
			switch {
			case v.Secret != nil:
				fmt.Printf("    volume %s: Secret %s\n", v.Name, v.Secret.SecretName)
			case v.Projected != nil:
				for _, src := range v.Projected.Sources {
					if t := src.ServiceAccountToken; t != nil {
						fmt.Printf("    volume %s: projected token, audience %s, %ds\n", v.Name, t.Audience, *t.ExpirationSeconds)
					}
				}
			}
		}
		fmt.Printf("    pod network: bridge %s 10.0.2.1/24, DHCP for the guest (MAC %s), veth-imds 169.254.169.254\n", l.Net.Bridge, l.Net.GuestMAC)
		fmt.Printf("    sidecar %s (log %s)\n", sidecarPrivileges(l.Pod), l.SidecarLog())
		fmt.Printf("    node agent plumbed veth-imds into the Pod's namespace (log %s)\n", node.NodeAgentLog())
	})
	ok = ok && d.step("Boot the guest; it finds the metadata service through SMBIOS", func() {
		var err error
		g, err = images.boot(d.ctx, d.guestKind, l, d.logFile)
		d.fatal(err, "booting the guest")
		d.tb.Cleanup(func() { _ = g.Close() })
		f := g.Boot()
		fmt.Printf("    %s: %s from %s in %.1fs\n", g.Kind(), f.Status, f.Datasource, f.Duration.Seconds())
		if f.Status != "status: done" || f.ExitCode != 0 {
			d.tb.Fatalf("cloud-init did not finish cleanly: %s (exit %d)", f.Status, f.ExitCode)
		}
	})
	ok = ok && d.step("What the guest got", func() {
		f := g.Boot()
		fmt.Print(indent(f.Describe(), "    "))
		motd, err := g.ReadFile(d.ctx, motdFile)
		d.fatal(err, "reading "+motdFile+" in the guest")
		fmt.Printf("    %s (written by the user-data): %q\n", motdFile, motd)
		raw, err := g.ReadFile(d.ctx, tokenFile)
		d.fatal(err, "reading "+tokenFile+" in the guest")
		var tok struct {
			Audience            string `json:"audience"`
			Token               string `json:"token"`
			ExpirationTimestamp string `json:"expirationTimestamp"`
		}
		d.fatal(json.Unmarshal([]byte(raw), &tok), "parsing the token the guest fetched")
		st, err := node.ReviewToken(d.ctx, tok.Token, tok.Audience)
		d.fatal(err, "TokenReview")
		if !st.Authenticated {
			d.tb.Fatalf("the API server did not authenticate the guest's token: %s", st.Error)
		}
		fmt.Printf("    token the guest fetched (audience %s, expires %s): TokenReview says authenticated=%t user=%s audiences=%v\n",
			tok.Audience, tok.ExpirationTimestamp, st.Authenticated, st.User.Username, st.Audiences)
		if pod := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(pod) > 0 {
			fmt.Printf("    bound to Pod %s\n", pod[0])
		}
		loaded, err := l.SidecarMetric(d.ctx, "kubevirt_imds_sidecar_payload_loaded")
		d.fatal(err, "reading the sidecar's metrics")
		summary = append(summary,
			fmt.Sprintf("guest:         %s", g.Kind()),
			fmt.Sprintf("cloud-init:    %s from %s in %.1fs", f.Status, f.Datasource, f.Duration.Seconds()),
			fmt.Sprintf("instance-id:   %s", f.InstanceID),
			fmt.Sprintf("hostname:      %s", f.Hostname),
			fmt.Sprintf("%s:     %q", motdFile, motd),
			fmt.Sprintf("address:       %s", strings.Join(guestspecs.IPv4Addresses(f.Addresses), ", ")),
			fmt.Sprintf("network:       %s", networkSummary(f.NetworkConfig)),
			fmt.Sprintf("token:         authenticated as %s for audience %v", st.User.Username, st.Audiences),
			fmt.Sprintf("served:        KUBECONFIG=%s kubectl imds show %s -n %s", node.Kubeconfig, sampleVMI, namespace),
			fmt.Sprintf("metrics:       sidecar: ip netns exec %s curl -s 127.0.0.2:8081/metrics (kubevirt_imds_sidecar_*, payload_loaded %g)", l.Net.Name, loaded),
			"               manager: kubevirt_imds_manager_* on its metrics endpoint (:8443 in a cluster; config/prometheus scrapes it)",
		)
	})
	ok = ok && d.step("Edit the MetadataService while the guest long-polls /v1/metadata", func() {
		res, err := l.LongPollDuring(d.ctx, g, "http://169.254.169.254/v1/metadata?wait_for_change=true&timeout_sec=120", func(ctx context.Context) error {
			var mds imdsv1alpha1.MetadataService
			if err := node.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: sampleService}, &mds); err != nil {
				return err
			}
			patch := client.MergeFrom(mds.DeepCopy())
			mds.Spec.Metadata.Tags["environment"] = "production"
			fmt.Printf("    kubectl edit mds %s: spec.metadata.tags.environment demo → production\n", sampleService)
			return node.Client.Patch(ctx, &mds, patch)
		})
		d.fatal(err, "long poll")
		var got struct {
			Tags map[string]string `json:"tags"`
		}
		d.fatal(json.Unmarshal([]byte(res.Body), &got), "parsing the long poll's answer: "+res.Body)
		if res.Code != 200 || got.Tags["environment"] != "production" {
			d.tb.Fatalf("the long poll answered %d with tags %v", res.Code, got.Tags)
		}
		fmt.Printf("    the guest's long poll returned %d with tags.environment=%s, %d ms after the edit\n",
			res.Code, got.Tags["environment"], res.AfterEdit.Milliseconds())
		summary = append(summary, fmt.Sprintf("live update:   tags.environment=production reached the guest's long poll %d ms after the edit", res.AfterEdit.Milliseconds()))
	})
	ok = ok && d.step("Clean up", func() {
		d.tb.cleanup()
		fmt.Printf("    guest, sidecar, node agent, network namespaces, manager and control plane stopped\n")
	})
	if !ok {
		return 1
	}
	fmt.Printf("\n==> Summary (%.0fs)\n", time.Since(d.start).Seconds())
	for _, s := range summary {
		fmt.Printf("    %s\n", s)
	}
	fmt.Printf("    logs:          %s\n", d.dir)
	return 0
}

// waitReady waits until the sample MetadataService is Ready with its
// instance selected.
func (d *demo) waitReady(node *singlenode.Node) *imdsv1alpha1.MetadataService {
	var mds imdsv1alpha1.MetadataService
	err := wait.PollUntilContextTimeout(d.ctx, 100*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		if err := node.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: sampleService}, &mds); err != nil {
			return false, nil //nolint:nilerr // not created yet: poll again
		}
		return mds.Status.ObservedGeneration == mds.Generation && mds.Status.SelectedInstances == 1 &&
			meta.IsStatusConditionTrue(mds.Status.Conditions, imdsv1alpha1.ConditionReady), nil
	})
	d.fatal(err, "waiting for MetadataService "+sampleService+" to be Ready")
	return &mds
}

// networkSummary names the network configuration files cloud-init wrote.
func networkSummary(files map[string]string) string {
	var paths []string
	for p := range files {
		if strings.HasPrefix(p, "/etc/") {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	if len(paths) == 0 {
		return "none written (DHCP fallback)"
	}
	return "cloud-init wrote " + strings.Join(paths, ", ") + " from the served network-config"
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

// sidecarPrivileges describes the injected sidecar's security context as a
// user would check it: its user and added capabilities.
func sidecarPrivileges(pod *corev1.Pod) string {
	user := "the Pod's user"
	if sc := pod.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil {
		user = fmt.Sprintf("uid %d", *sc.RunAsUser)
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name != controllers.SidecarContainerName {
			continue
		}
		caps := "no capability"
		if sc := c.SecurityContext; sc != nil {
			if sc.RunAsUser != nil {
				user = fmt.Sprintf("uid %d", *sc.RunAsUser)
			}
			if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
				caps = fmt.Sprint(sc.Capabilities.Add)
			}
		}
		return fmt.Sprintf("ready as %s with %s", user, caps)
	}
	return "missing"
}
