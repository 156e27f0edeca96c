package singlenode

import (
	"context"
	"net/http"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// sidecarReadyTimeout bounds a sidecar's start until /readyz: the payload
// loaded and veth-imds attached. Tens of milliseconds normally.
const sidecarReadyTimeout = time.Minute

// mountTimeout bounds kubelet's wait for the payload Secret and the tokens.
const mountTimeout = 2 * time.Minute

// Launcher is a VMI's virt-launcher Pod on the node: the Pod object as the
// API server admitted it, its network namespace and its sidecar.
type Launcher struct {
	// VMI is the instance as last read.
	VMI *kubevirtv1.VirtualMachineInstance
	// Pod is the launcher Pod after admission: with the sidecar, if the
	// webhook injected it.
	Pod *corev1.Pod
	// Net is the Pod's network namespace, bridge and guest side.
	Net *podnet.Pod
	// Volumes maps the sidecar's mount paths to host directories.
	Volumes map[string]string

	node    *Node
	sidecar *Process
}

// PlumbFunc builds the VM's network in the Pod's namespace as KubeVirt
// would, e.g. (*podnet.Pod).PlumbMasqueradeDHCP.
type PlumbFunc func(tb podnet.TB, p *podnet.Pod)

// Launch plays virt-controller, virt-handler and kubelet for the VMI
// namespace/name: it creates the virt-launcher Pod as virt-controller builds
// it (through the admission webhooks), builds its network with plumb,
// reports the Pod running and the VMI's interface as virt-handler does, and,
// when the webhook injected the sidecar, mounts its volumes and runs it from
// the Pod's spec, waiting until it is ready.
func (n *Node) Launch(tb podnet.TB, ctx context.Context, namespace, name string, plumb PlumbFunc) *Launcher {
	tb.Helper()
	var vmi kubevirtv1.VirtualMachineInstance
	if err := n.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &vmi); err != nil {
		tb.Fatalf("reading VMI %s/%s: %v", namespace, name, err)
	}
	pod := fixtures.LauncherPod(&vmi)
	if err := n.Client.Create(ctx, pod); err != nil {
		tb.Fatalf("creating the virt-launcher Pod of %s/%s: %v", namespace, name, err)
	}
	l := &Launcher{VMI: &vmi, Pod: pod, node: n}

	l.Net = podnet.NewPod(tb)
	plumb(tb, l.Net)

	pod.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		PodIP:  podnet.PodIP.Addr().String(),
		PodIPs: []corev1.PodIP{{IP: podnet.PodIP.Addr().String()}},
	}
	if err := n.Client.Status().Update(ctx, pod); err != nil {
		tb.Fatalf("reporting the launcher Pod running: %v", err)
	}
	l.reportRunning(tb, ctx)

	if !l.HasSidecar() {
		return l
	}
	mctx, cancel := context.WithTimeout(ctx, mountTimeout)
	defer cancel()
	vols, err := n.Kubelet.MountVolumes(mctx, pod, controllers.SidecarContainerName)
	if err != nil {
		tb.Fatalf("mounting the sidecar's volumes: %v", err)
	}
	l.Volumes = vols
	l.StartSidecar(tb, ctx)
	return l
}

// reportRunning sets the VMI's status as virt-handler does once the domain
// runs: phase, node, and the interface with the MAC the guest NIC has.
func (l *Launcher) reportRunning(tb podnet.TB, ctx context.Context) {
	tb.Helper()
	vmi := l.VMI.DeepCopy()
	vmi.Status.Phase = kubevirtv1.Running
	vmi.Status.NodeName = "node-1"
	ifaces := []kubevirtv1.VirtualMachineInstanceNetworkInterface{}
	for _, i := range vmi.Spec.Domain.Devices.Interfaces {
		st := kubevirtv1.VirtualMachineInstanceNetworkInterface{Name: i.Name, InfoSource: "domain"}
		if len(ifaces) == 0 {
			st.MAC = l.Net.GuestMAC.String()
			st.PodInterfaceName = "eth0"
		}
		ifaces = append(ifaces, st)
	}
	vmi.Status.Interfaces = ifaces
	// The VMI CRD has no status subresource: virt-handler updates the object.
	if err := l.node.Client.Update(ctx, vmi); err != nil {
		tb.Fatalf("reporting VMI %s running: %v", vmi.Name, err)
	}
	l.VMI = vmi
}

// HasSidecar says whether the webhook injected the sidecar into the Pod.
func (l *Launcher) HasSidecar() bool {
	for _, c := range l.Pod.Spec.InitContainers {
		if c.Name == controllers.SidecarContainerName {
			return true
		}
	}
	return false
}

// SidecarLog is the path of the sidecar's log.
func (l *Launcher) SidecarLog() string {
	return filepath.Join(l.node.WorkDir, l.Pod.Name+"."+controllers.SidecarContainerName+".log")
}

// StartSidecar runs the sidecar container from the Pod's spec in the Pod's
// network namespace and waits until it reports ready.
func (l *Launcher) StartSidecar(tb podnet.TB, ctx context.Context) {
	tb.Helper()
	if l.sidecar != nil {
		tb.Fatalf("the sidecar is already running")
	}
	cmd, err := l.node.Kubelet.Command(context.Background(), l.Pod, controllers.SidecarContainerName, l.Volumes, l.Net.NS)
	if err != nil {
		tb.Fatalf("the sidecar's command: %v", err)
	}
	p, err := StartCommand(l.SidecarLog(), cmd)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	l.sidecar = p
	tb.Cleanup(func() { l.stopSidecar(tb) })
	rctx, cancel := context.WithTimeout(ctx, sidecarReadyTimeout)
	defer cancel()
	err = p.WaitReady(rctx, 20*time.Millisecond, func(ctx context.Context) bool {
		code, _, err := l.Net.AdminGet(ctx, "http://127.0.0.2:8081/readyz")
		return err == nil && code == http.StatusOK
	})
	if err != nil {
		tb.Fatalf("waiting for the sidecar to be ready (log: %s): %v", l.SidecarLog(), err)
	}
}

// StopSidecar stops the sidecar as kubelet does: SIGTERM, then SIGKILL.
func (l *Launcher) StopSidecar(tb podnet.TB) {
	tb.Helper()
	l.stopSidecar(tb)
}

func (l *Launcher) stopSidecar(tb podnet.TB) {
	if l.sidecar == nil {
		return
	}
	if err := l.sidecar.Stop(); err != nil {
		tb.Logf("sidecar: %v", err)
	}
	l.sidecar = nil
}

// SMBIOS is what the VM's firmware reports, from the VMI's spec as KubeVirt
// builds the domain with its default cluster-wide SMBIOS settings.
func SMBIOS(vmi *kubevirtv1.VirtualMachineInstance) guest.SMBIOS {
	s := guest.KubeVirtSMBIOS("", "")
	if fw := vmi.Spec.Domain.Firmware; fw != nil {
		s.Serial, s.UUID = fw.Serial, string(fw.UUID)
	}
	if ch := vmi.Spec.Domain.Chassis; ch != nil {
		s.ChassisManufacturer, s.ChassisVersion, s.ChassisSerial, s.ChassisAsset = ch.Manufacturer, ch.Version, ch.Serial, ch.Asset
	}
	return s
}
