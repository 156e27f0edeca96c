package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/uuid"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// SidecarContainerName is the name of the metadata sidecar in a virt-launcher
// Pod. The Pod webhook injects it and the controller looks for it.
const SidecarContainerName = "imds-sidecar"

// LauncherAppValue is the value of KubeVirt's kubevirt.io label on
// virt-launcher Pods (virt-controller's podLabels).
const LauncherAppValue = "virt-launcher"

// SMBIOS values the VMI webhook sets per guest discovery mode.
const (
	// NoCloudSerial is the SMBIOS system serial that makes cloud-init's
	// NoCloud datasource fetch its seed from the metadata service.
	NoCloudSerial = "ds=nocloud;s=http://169.254.169.254/nocloud/;dsmode=net"
	// OpenStackAssetTag is the SMBIOS chassis asset tag by which cloud-init
	// and cloudbase-init recognise an OpenStack (nova) instance.
	OpenStackAssetTag = "OpenStack Nova"
)

// LauncherPodSelector selects KubeVirt's virt-launcher Pods.
func LauncherPodSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{kubevirtv1.AppLabel: LauncherAppValue})
}

// OwnObjectsSelector selects the Secrets and ConfigMaps the operator writes
// (payload Secrets, the identity key and its certificates).
func OwnObjectsSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{imdsv1alpha1.LabelManagedBy: imdsv1alpha1.ManagedByValue})
}

// CacheOptions restricts the manager's cache to what it serves: the
// virt-launcher Pods, and its own Secrets and ConfigMaps. It never holds
// every Pod, Secret or ConfigMap of the cluster in memory; the sources that
// MetadataServices reference are read through a SourceReader. Cached objects
// lose their managedFields, which nothing here reads: on a VMI or a launcher
// Pod they are often as large as the rest of its metadata, and a write of a
// cached object without them leaves the server's unchanged. Instances'
// payload Secrets lose their data too (stripCachedObject).
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:       {Label: LauncherPodSelector()},
			&corev1.Secret{}:    {Label: OwnObjectsSelector()},
			&corev1.ConfigMap{}: {Label: OwnObjectsSelector()},
		},
		DefaultTransform: stripCachedObject,
	}
}

// ServingMetadataService returns the MetadataService among services (all of
// one namespace) that serves a VMI with the given labels, or nil. It is the
// controller's own selection rule, for the webhooks to agree with it.
func ServingMetadataService(services []imdsv1alpha1.MetadataService, vmiLabels map[string]string) *imdsv1alpha1.MetadataService {
	return winnerFor(services, vmiLabels)
}

// GuestDiscoveryOf is the service's guest discovery mode, defaulted as the
// CRD defaults it.
func GuestDiscoveryOf(mds *imdsv1alpha1.MetadataService) imdsv1alpha1.GuestDiscovery {
	if mds.Spec.GuestDiscovery == "" {
		return imdsv1alpha1.GuestDiscoveryNoCloud
	}
	return mds.Spec.GuestDiscovery
}

// DiscoveryValue returns the SMBIOS value that mode needs on vmi, the value
// the VMI has there ("" if unset), and whether the mode sets anything.
func DiscoveryValue(mode imdsv1alpha1.GuestDiscovery, vmi *kubevirtv1.VirtualMachineInstance) (want, have string, applies bool) {
	switch mode {
	case imdsv1alpha1.GuestDiscoveryNoCloud:
		if fw := vmi.Spec.Domain.Firmware; fw != nil {
			have = fw.Serial
		}
		return NoCloudSerial, have, true
	case imdsv1alpha1.GuestDiscoveryOpenStack:
		if ch := vmi.Spec.Domain.Chassis; ch != nil {
			have = ch.Asset
		}
		return OpenStackAssetTag, have, true
	case imdsv1alpha1.GuestDiscoveryEC2:
		// The serial is the mode's to set (as with NoCloud); the UUID
		// follows it (EC2UUID).
		if fw := vmi.Spec.Domain.Firmware; fw != nil {
			have = fw.Serial
		}
		return EC2UUID(vmi), have, true
	}
	return "", "", false
}

// EC2UUID is the firmware UUID the EC2 guest discovery gives vmi: its own
// with the first three hex digits replaced by "ec2", by which cloud-init
// identifies AWS (22.4 also wants the SMBIOS serial to equal it). It is a
// function of the UUID KubeVirt derives for the VM, so it is the same on
// every start; a VMI without one gets one derived from its namespace and
// name, as KubeVirt derives a VM's.
func EC2UUID(vmi *kubevirtv1.VirtualMachineInstance) string {
	u := ""
	if fw := vmi.Spec.Domain.Firmware; fw != nil {
		u = strings.ToLower(string(fw.UUID))
	}
	if _, err := uuid.Parse(u); err != nil {
		u = uuid.NewSHA1(uuid.NameSpaceOID, []byte("kubevirt-imds/"+vmi.Namespace+"/"+vmi.Name)).String()
	}
	if strings.HasPrefix(u, "ec2") {
		return u
	}
	return "ec2" + u[3:]
}

// KubeVirtGeneratedSerial reports whether serial is the SMBIOS serial that
// KubeVirt's VirtualMachine mutator (virt-api) gives every VirtualMachine
// without one: a random UUID, persisted in the VM's template so that it stays
// the same across restarts. It carries no meaning of its own, and keeping it
// would keep NoCloud discovery from every VM started from a VirtualMachine,
// so the VMI webhook replaces it; a serial that is not a bare UUID, or one on
// a VMI no VirtualMachine owns, was chosen by a user and is kept.
func KubeVirtGeneratedSerial(vmi *kubevirtv1.VirtualMachineInstance, serial string) bool {
	if err := uuid.Validate(serial); err != nil || len(serial) != len(uuid.Nil.String()) {
		return false
	}
	return slices.ContainsFunc(vmi.OwnerReferences, func(o metav1.OwnerReference) bool {
		return o.Kind == "VirtualMachine" && strings.HasPrefix(o.APIVersion, kubevirtv1.SchemeGroupVersion.Group+"/")
	})
}

// HasSidecar reports whether pod runs the metadata sidecar.
func HasSidecar(pod *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		if slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == SidecarContainerName }) {
			return true
		}
	}
	return false
}

// RunsWithoutSidecar reports whether pod, a virt-launcher Pod of vmi, runs
// the VM (or will) without the metadata sidecar: it is active, not the
// source of a completed live migration, and has no sidecar. The controller
// reports such Pods as SidecarMissing, and `kubectl imds show` explains them.
func RunsWithoutSidecar(vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) bool {
	return podActive(pod) && !migratedAway(vmi, pod) && !HasSidecar(pod)
}

// podActive is a Pod that runs or will run: not finished, not going away.
// Its spec can no longer gain containers, so one without the sidecar stays so.
func podActive(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp.IsZero() && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// maxReported bounds the memory of which Events were recorded; forgetting
// only means one more Event.
const maxReported = 10000

// reportedSet remembers which Pods and VMIs already got an Event, so that a
// busy reconcile loop does not repeat it.
type reportedSet struct {
	mu   sync.Mutex
	seen map[string]bool
}

// first reports whether key is new, and remembers it.
func (s *reportedSet) first(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil || len(s.seen) >= maxReported {
		s.seen = map[string]bool{}
	}
	if s.seen[key] {
		return false
	}
	s.seen[key] = true
	return true
}

// inspectInstances finds what keeps served VMIs from being configured:
// VMIs the sidecar cannot serve (Unservable), active virt-launcher Pods
// without the sidecar, and VMIs without the guest discovery value. Each gets
// a Warning Event on the VMI once per process, except a VMI merely created
// before its service (or while the VMI webhook was unavailable): that is
// common, would cost one write per VMI on every operator start, and the
// condition says it.
//
// A VMI has two launcher Pods during a live migration, both labelled with its
// UID (kubevirt.io/created-by); the target is rendered afresh and admitted
// like any Pod, so it gets the sidecar or not on its own. Each active Pod is
// judged by itself: a target without the sidecar is reported (the VM loses
// the service when the migration completes), and a source that has finished
// (its phase, or the VMI's completed migration state) no longer counts.
func (r *MetadataServiceReconciler) inspectInstances(ctx context.Context, s *scope) error {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(s.mds.Namespace), client.MatchingLabelsSelector{Selector: LauncherPodSelector()}, readOnlyList); err != nil {
		return fmt.Errorf("listing virt-launcher Pods: %w", err)
	}
	s.pods = podsByInstance(pods.Items)
	in := &inspection{Mode: GuestDiscoveryOf(s.mds)}
	unservable := map[types.UID]bool{}
	forbidden, err := r.sidecarForbidden(ctx, s.mds.Namespace)
	if err != nil {
		return err
	}
	for _, vmi := range s.served {
		reason, message := Unservable(s.mds, vmi)
		if reason == "" && forbidden != "" {
			reason, message = imdsv1alpha1.ReasonPodSecurityForbidsSidecar, forbidden
		}
		if reason == "" {
			continue
		}
		unservable[vmi.UID] = true
		in.Unservable = append(in.Unservable, imdsv1alpha1.UnservableInstance{Name: vmi.Name, Reason: reason, Message: message})
		if r.reported.first("unservable/" + string(vmi.UID) + "/" + reason) {
			r.Recorder.Eventf(vmi, s.mds, corev1.EventTypeWarning, reason, "Inspect",
				"MetadataService %s cannot serve VirtualMachineInstance %s: %s. Its virt-launcher Pod gets no metadata sidecar.",
				s.mds.Name, vmi.Name, message)
		}
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		vmi := s.served[types.UID(pod.Labels[kubevirtv1.CreatedByLabel])]
		if vmi == nil || unservable[vmi.UID] || !RunsWithoutSidecar(vmi, pod) {
			continue
		}
		if !slices.Contains(in.Missing, vmi.Name) {
			in.Missing = append(in.Missing, vmi.Name)
		}
		if r.reported.first("pod/" + string(pod.UID)) {
			r.Recorder.Eventf(vmi, pod, corev1.EventTypeWarning, imdsv1alpha1.ReasonSidecarMissing, "Inspect", "%s", sidecarMissingMessage(s.mds, vmi, pod))
		}
	}
	for _, vmi := range s.served {
		want, have, applies := DiscoveryValue(in.Mode, vmi)
		if unservable[vmi.UID] || !applies || have == want {
			continue
		}
		in.Undiscovered = append(in.Undiscovered, vmi.Name)
		if have != "" && r.reported.first("discovery/"+string(vmi.UID)+"/"+string(in.Mode)) {
			r.Recorder.Eventf(vmi, nil, corev1.EventTypeWarning, imdsv1alpha1.ReasonGuestDiscoveryNotApplied, "Inspect",
				"guest discovery %s of MetadataService %s is not applied: the VMI sets %q itself, which is never overwritten",
				in.Mode, s.mds.Name, have)
		}
	}
	s.status.Inspection = in
	return nil
}

// migratingTo reports whether pod is the target of a live migration of vmi
// that has not completed. It carries the job's label, which it keeps for
// life: once the migration completes it is the Pod the VM runs in, and the
// source of the next migration. The VMI's migration state tells those apart;
// it still describes the previous migration while a new target starts.
func migratingTo(vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) bool {
	if pod.Labels[kubevirtv1.MigrationJobLabel] == "" {
		return false
	}
	ms := vmi.Status.MigrationState
	switch {
	case ms == nil:
		return true
	case ms.SourcePod == pod.Name:
		return false
	case ms.TargetPod == pod.Name:
		return !ms.Completed
	}
	return true
}

// migratedAway reports whether pod is the source of a live migration of vmi
// that has completed: the VM runs in the target, and the source is only
// waiting to end (virt-handler shuts its domain down and the Pod turns
// Succeeded shortly after).
func migratedAway(vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) bool {
	ms := vmi.Status.MigrationState
	return ms != nil && ms.Completed && !ms.Failed && ms.SourcePod == pod.Name && ms.TargetPod != pod.Name
}

// sidecarMissingMessage tells what a Pod without the sidecar means for the VM
// and what gets it the sidecar: a new launcher Pod, from a restart or a live
// migration, whose admission injects it.
func sidecarMissingMessage(mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) string {
	if migratingTo(vmi, pod) {
		return fmt.Sprintf("virt-launcher Pod %s, the target of live migration %s of VirtualMachineInstance %s, runs without the metadata sidecar of MetadataService %s: "+
			"once the migration completes the VM has no metadata service; migrate it again or restart it to get it",
			pod.Name, pod.Labels[kubevirtv1.MigrationJobLabel], vmi.Name, mds.Name)
	}
	return fmt.Sprintf("virt-launcher Pod %s of VirtualMachineInstance %s runs without the metadata sidecar of MetadataService %s: restart or live-migrate the VM to get it",
		pod.Name, vmi.Name, mds.Name)
}

// servicesForLauncherPod enqueues the services of a virt-launcher Pod's VMI.
func (r *MetadataServiceReconciler) servicesForLauncherPod(ctx context.Context, o client.Object) []reconcile.Request {
	name := o.GetAnnotations()[kubevirtv1.DomainAnnotation]
	if name == "" {
		return nil
	}
	var vmi kubevirtv1.VirtualMachineInstance
	if err := r.Get(ctx, types.NamespacedName{Namespace: o.GetNamespace(), Name: name}, &vmi, readOnlyGet); err != nil {
		if client.IgnoreNotFound(err) != nil {
			log.FromContext(ctx).Error(err, "reading the VirtualMachineInstance of a virt-launcher Pod", "pod", o.GetName())
		}
		return nil
	}
	return r.servicesForInstance(ctx, &vmi)
}

// launcherPodChanged passes virt-launcher Pod events that can change whether
// a served VMI runs without its sidecar: arrival, departure and the end of
// the Pod, not its frequent status updates.
var launcherPodChanged = predicate.And(
	predicate.NewPredicateFuncs(func(o client.Object) bool { return LauncherPodSelector().Matches(labels.Set(o.GetLabels())) }),
	predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			old, okOld := e.ObjectOld.(*corev1.Pod)
			cur, okNew := e.ObjectNew.(*corev1.Pod)
			if !okOld || !okNew {
				return true
			}
			return podActive(old) != podActive(cur)
		},
	},
)

// sidecarForbidden says why the webhooks give the VMIs of namespace no
// sidecar for Pod Security (PrivilegedSidecarForbidden), or "".
func (r *MetadataServiceReconciler) sidecarForbidden(ctx context.Context, namespace string) (string, error) {
	if !r.PrivilegedSidecar {
		return "", nil
	}
	var ns corev1.Namespace
	if err := r.Get(ctx, types.NamespacedName{Name: namespace}, &ns); err != nil {
		return "", fmt.Errorf("reading Namespace %s for its Pod Security level: %w", namespace, err)
	}
	return PrivilegedSidecarForbidden(namespace, ns.Labels, r.PodSecurityDefaultLevel), nil
}
