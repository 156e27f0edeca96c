// Package controllers holds the kubevirt-imds operator's reconcilers.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/instanceidentity"
)

// sourceRecheckInterval re-reads the sources of a MetadataService whose
// sources are missing or invalid, as a safety net besides the watches.
const sourceRecheckInterval = 5 * time.Minute

// payloadWriteConcurrency bounds the payload Secret writes of one reconcile.
const payloadWriteConcurrency = 16

// sourceRefIndex indexes MetadataServices by the Secrets and ConfigMaps they
// read (see sourceRefs).
const sourceRefIndex = "imds.kubevirt.io/source-refs"

// Event reasons the reconciler records besides the condition reasons.
const (
	eventPayloadsWritten = "PayloadsWritten"
	eventPayloadsRemoved = "PayloadsRemoved"
	eventRecovered       = "Recovered"
)

// MetadataServiceReconciler renders one payload document per VMI a
// MetadataService serves and keeps it in a Secret owned by the VMI.
type MetadataServiceReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	// PrivilegedSidecar is set with --sidecar-network-setup=sidecar: the Pod
	// webhook then injects no sidecar (and the VMI webhook no discovery data)
	// in namespaces whose Pod Security level is not privileged, and their
	// VMIs are reported unservable for it (ReasonPodSecurityForbidsSidecar)
	// rather than as missing their sidecar.
	PrivilegedSidecar bool
	// PodSecurityDefaultLevel is the level enforced in namespaces without
	// the label (--pod-security-default-level).
	PodSecurityDefaultLevel string
	// Identity keeps the key that signs EC2 instance identity documents;
	// nil serves none.
	Identity *IdentityKeys
	// Sources reads the Secrets and ConfigMaps MetadataServices reference;
	// SetupWithManager sets it when nil. Without it (a reconciler used on
	// its own) sources are read through Client.
	Sources *SourceReader
	// signatures remembers signed identity documents: a VMI's payload is
	// rendered again on every event that may concern it, its document
	// rarely changes.
	signatures instanceidentity.Cache

	// reported remembers the Pods and VMIs already warned about.
	reported reportedSet
	// current remembers which VMIs' payload Secrets are current for their
	// inputs; an event on the payload Secret forgets the entry
	// (servicesForPayloadSecret).
	current currentPayloads
	// claimed remembers, per VMI UID, when a writer in this process (the
	// reconcile, or the Pod webhook through ClaimPayload) claimed the write
	// of the VMI's payload, until the cache sees the Secret (claim).
	claimed sync.Map
	// retry receives the services of payload writes the Pod webhook claimed
	// and failed (endClaim): the reconciles that left those VMIs to it are
	// owed one more.
	retry chan event.GenericEvent
	// sharedAhead holds, per service, the shared payload Secret that the Pod
	// webhook's documents refer to while the cache does not show it
	// (expectShared, storeSharedAhead); sharedWrites makes concurrent writes
	// of it share one.
	sharedAhead  sync.Map
	sharedWrites singleflight.Group
}

// retryBuffer bounds the failed webhook writes waiting for their service's
// reconcile; beyond it the controller is far behind, and a dropped retry
// waits for the service's next event.
const retryBuffer = 1024

// +kubebuilder:rbac:groups=imds.kubevirt.io,resources=metadataservices,verbs=get;list;watch
// The status is written with a merge patch only.
// +kubebuilder:rbac:groups=imds.kubevirt.io,resources=metadataservices/status,verbs=patch
// +kubebuilder:rbac:groups=kubevirt.io,resources=virtualmachineinstances,verbs=get;list;watch
// Secrets and ConfigMaps are read cluster-wide because MetadataServices live in
// any namespace and name their sources (user-data, vendor-data, SSH keys) in
// their own: the controller gets them, and watches them to re-render when one
// changes; RBAC cannot narrow list and watch to the Secrets a service names.
// It writes only the payload Secrets `imds-<vmi>` beside each VMI (create,
// full-object update, delete when stale; never patch). The webhooks read the
// same Secrets, VMIs and MetadataServices, live, with these rights.
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch
// The controller reports served VMIs whose virt-launcher Pod lacks the sidecar;
// its cache holds launcher Pods only (CacheOptions), a label selector RBAC
// cannot express.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// Condition changes are recorded as events.k8s.io/v1 Events on the MetadataService.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// The EC2 dialect's placement comes from the topology labels of the VMI's Node.
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// The identity signing key's Secret is written with the Secret rights above;
// its certificates are published in one ConfigMap of the operator's namespace.
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=create;update

// Reconcile brings the payload Secrets of one MetadataService, and its status,
// in line with its spec, its sources and the VMIs it selects. The status is
// patched whatever happens, from what the phases found (computeStatus).
func (r *MetadataServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	mds := &imdsv1alpha1.MetadataService{}
	if err := r.Get(ctx, req.NamespacedName, mds); err != nil {
		if apierrors.IsNotFound(err) {
			// Deleted: its payloads go unless another service takes the VMIs.
			forgetInstances(req.Namespace, req.Name)
			_, err := r.removeStalePayloads(ctx, req.Namespace, req.Name, nil)
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, err
	}
	if !mds.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	s := &scope{mds: mds, before: mds.DeepCopy()}
	defer func() {
		s.status.Err = retErr
		if err := r.patchStatus(ctx, s); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	return r.reconcileNormal(ctx, s)
}

// reconcileNormal runs the phases in order; each records its findings in the
// scope, and the first error ends the reconcile.
func (r *MetadataServiceReconciler) reconcileNormal(ctx context.Context, s *scope) (ctrl.Result, error) {
	for _, phase := range []func(context.Context, *scope) error{
		r.selectInstances,
		r.inspectInstances,
		r.reconcilePayloads,
		r.reconcileStalePayloads,
	} {
		if err := phase(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	if s.status.Source != nil {
		// The watches re-render when a source appears; this is the safety net.
		return ctrl.Result{RequeueAfter: sourceRecheckInterval}, nil //nolint:nilerr // a missing source is status, not a reconcile error
	}
	if !s.status.RotateAt.IsZero() {
		// Every service comes back when the signing key is due, so its
		// documents are re-signed with the next one.
		return ctrl.Result{RequeueAfter: max(time.Until(s.status.RotateAt), time.Second)}, nil
	}
	return ctrl.Result{}, nil
}

// readOnlyList lists from the cache without copying the objects: they are
// the cache's own, shared with every reader, and must not be modified. The
// reconciler only reads what it lists (VMIs, launcher Pods, payload Secrets)
// and writes copies it makes itself.
var readOnlyList = client.UnsafeDisableDeepCopy

// readOnlyGet is readOnlyList for a Get, in the event handlers that run for
// every VMI and launcher Pod event.
var readOnlyGet = client.UnsafeDisableDeepCopy

// scope carries one reconcile's findings from phase to phase.
type scope struct {
	mds    *imdsv1alpha1.MetadataService
	before *imdsv1alpha1.MetadataService
	// services are all MetadataServices in the namespace.
	services []imdsv1alpha1.MetadataService
	// instances are all VMIs in the namespace, by UID.
	instances map[types.UID]*kubevirtv1.VirtualMachineInstance
	// served are the VMIs this service wins.
	served map[types.UID]*kubevirtv1.VirtualMachineInstance
	// kept are payload Secrets this reconcile wrote or found current; the
	// cache may still show their previous owner.
	kept map[string]bool
	// pods are the namespace's launcher Pods, by the UID of their VMI.
	pods   map[types.UID][]*corev1.Pod
	status statusInput
}

// selectInstances finds the VMIs this service serves and the ones it loses.
func (r *MetadataServiceReconciler) selectInstances(ctx context.Context, s *scope) error {
	var services imdsv1alpha1.MetadataServiceList
	if err := r.List(ctx, &services, client.InNamespace(s.mds.Namespace)); err != nil {
		return fmt.Errorf("listing MetadataServices: %w", err)
	}
	var vmis kubevirtv1.VirtualMachineInstanceList
	// Not copied (readOnlyList): every reconcile reads every VMI of the
	// namespace, and copying them was most of a reconcile's CPU.
	if err := r.List(ctx, &vmis, client.InNamespace(s.mds.Namespace), readOnlyList); err != nil {
		return fmt.Errorf("listing VirtualMachineInstances: %w", err)
	}
	s.services = services.Items
	s.instances = make(map[types.UID]*kubevirtv1.VirtualMachineInstance, len(vmis.Items))
	s.served = map[types.UID]*kubevirtv1.VirtualMachineInstance{}
	sel := &selection{}
	own := selectorFor(s.mds)
	for i := range vmis.Items {
		vmi := &vmis.Items[i]
		s.instances[vmi.UID] = vmi
		if !vmi.DeletionTimestamp.IsZero() || !own.Matches(labelSet(vmi.Labels)) {
			continue
		}
		winner := winnerFor(s.services, vmi.Labels)
		if winner == nil || winner.UID == s.mds.UID {
			s.served[vmi.UID] = vmi
			continue
		}
		sel.Conflicts = append(sel.Conflicts, conflict{Instance: vmi.Name, Winner: winner.Name})
	}
	sel.Served = len(s.served)
	s.status.Selection = sel
	return nil
}

// reconcilePayloads resolves the service's sources and writes the payload of
// every served VMI. A source problem (missing, oversized, invalid) writes
// nothing: served VMIs keep their last good payload.
func (r *MetadataServiceReconciler) reconcilePayloads(ctx context.Context, s *scope) error {
	src, err := r.resolveSources(ctx, s.mds)
	if p := (*problem)(nil); errors.As(err, &p) {
		s.status.Source, s.status.Unrendered = p, len(s.served)
		return nil
	} else if err != nil {
		return err
	}
	return r.writePayloads(ctx, s, src)
}

// reconcileStalePayloads removes the payloads of VMIs no service serves any
// more; VMIs that another service now wins keep theirs until it overwrites
// them.
func (r *MetadataServiceReconciler) reconcileStalePayloads(ctx context.Context, s *scope) error {
	removed, err := r.removeStalePayloads(ctx, s.mds.Namespace, s.mds.Name, s)
	if p := (*problem)(nil); errors.As(err, &p) {
		s.status.Write = p
	}
	if removed > 0 {
		r.Recorder.Eventf(s.mds, nil, corev1.EventTypeNormal, eventPayloadsRemoved, "Reconcile",
			"removed the payloads of %d instances no longer served", removed)
	}
	return err
}

// writePayloads renders and stores the payload of every served VMI.
func (r *MetadataServiceReconciler) writePayloads(ctx context.Context, s *scope, src *resolvedSources) error {
	var (
		mu      sync.Mutex
		written int
		errs    []error
	)
	s.kept = make(map[string]bool, len(s.served))
	// In a boot storm hundreds of VMIs arrive at once, and each launcher
	// Pod's admission waits for its payload: write them concurrently, so
	// that the client's rate limit, not round trips, bounds the wait.
	g := new(errgroup.Group)
	g.SetLimit(payloadWriteConcurrency)
	inputs := sourcesKey(s.mds, src)
	sharedName := imdsv1alpha1.SharedPayloadSecretName(s.mds.Name)
	shareable, err := r.ensureSharedPayload(ctx, s.mds, src)
	if err != nil {
		// Every document then holds its own copy: served all the same.
		errs = append(errs, err)
	}
	ring, err := r.identityKeyring(ctx, true)
	if err != nil {
		// Payloads never wait on the signing key: sign with the key as
		// it is, or serve no identity document until it can be kept.
		log.FromContext(ctx).Error(err, "keeping the identity signing key")
		if ring, err = r.identityKeyring(ctx, false); err != nil {
			log.FromContext(ctx).Error(err, "reading the identity signing key")
		}
	}
	if ring != nil {
		s.status.IdentityCertificates = ring.PEMs()
		s.status.RotateAt = ring.rotateAt
	}
	for _, vmi := range s.served {
		s.kept[imdsv1alpha1.PayloadSecretName(vmi.Name)] = true
		in := r.ec2InputsWith(ctx, vmi, ring)
		shared := shareable && !holdsOwnCopy(vmi, s.pods[vmi.UID], sharedName)
		key := inputs + "/" + string(vmi.UID) + "/" + vmi.ResourceVersion + "/" + in.cacheKey() + "/" + strconv.FormatBool(shared)
		if r.current.isCurrent(vmi.UID, key) {
			continue
		}
		if !r.claim(vmi.UID) {
			// The Pod webhook is writing it: its Secret's event, or its
			// failure (retry), brings the service back.
			continue
		}
		seq := r.current.since()
		g.Go(func() error {
			doc := timedRender(s.mds, src, vmi, in)
			if shared {
				referShared(doc, s.mds)
			}
			wrote, err := r.ensurePayloadSecret(ctx, s.mds, vmi, doc)
			r.endClaim(vmi.UID, wrote, err)
			if err == nil && !wrote {
				// Found current: nothing to do until an input or the Secret changes.
				r.current.remember(vmi.UID, key, seq)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("payload of %s: %w", vmi.Name, err))
			} else if wrote {
				written++
			}
			return nil
		})
	}
	_ = g.Wait()
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	if written > 0 {
		r.Recorder.Eventf(s.mds, nil, corev1.EventTypeNormal, eventPayloadsWritten, "Reconcile",
			"wrote the payloads of %d instances", written)
	}
	if len(errs) > 0 {
		s.status.Write = &problem{Reason: imdsv1alpha1.ReasonPayloadWriteFailed, Message: kerrors.NewAggregate(errs).Error()}
		return kerrors.NewAggregate(errs)
	}
	return nil
}

// patchStatus computes the status from the scope, records Events for changed
// conditions and patches the status only when it changed.
func (r *MetadataServiceReconciler) patchStatus(ctx context.Context, s *scope) error {
	s.status.Generation, s.status.Now = s.mds.Generation, metav1.Now()
	s.mds.Status = computeStatus(s.before.Status, s.status)
	recordInstances(s.mds, s.status)
	recordConditions(s.mds)
	if equality.Semantic.DeepEqual(s.before.Status, s.mds.Status) {
		return nil
	}
	r.recordConditionEvents(s)
	if err := r.Status().Patch(ctx, s.mds, client.MergeFrom(s.before)); err != nil {
		return fmt.Errorf("patching status: %w", err)
	}
	return nil
}

// recordConditionEvents emits an Event when Degraded changes, so users see
// problems (and their end) in `kubectl describe` without repeated Events on
// every resync.
func (r *MetadataServiceReconciler) recordConditionEvents(s *scope) {
	was := findCondition(s.before.Status.Conditions, imdsv1alpha1.ConditionDegraded)
	now := findCondition(s.mds.Status.Conditions, imdsv1alpha1.ConditionDegraded)
	if now == nil || (was != nil && was.Status == now.Status && was.Reason == now.Reason && was.Message == now.Message) {
		return
	}
	switch {
	case now.Status == metav1.ConditionTrue:
		r.Recorder.Eventf(s.mds, nil, corev1.EventTypeWarning, now.Reason, "Reconcile", "%s", now.Message)
	case now.Status == metav1.ConditionFalse && was != nil && was.Status == metav1.ConditionTrue:
		r.Recorder.Eventf(s.mds, nil, corev1.EventTypeNormal, eventRecovered, "Reconcile", "no longer degraded (was %s)", was.Reason)
	}
}

func findCondition(cs []metav1.Condition, t string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// SetupWithManager registers the reconciler, its index and its watches.
func (r *MetadataServiceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &imdsv1alpha1.MetadataService{}, sourceRefIndex,
		func(o client.Object) []string { return sourceRefs(o.(*imdsv1alpha1.MetadataService)) }); err != nil {
		return fmt.Errorf("indexing MetadataServices by source: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &kubevirtv1.VirtualMachineInstance{}, nodeNameIndex,
		func(o client.Object) []string {
			if n := o.(*kubevirtv1.VirtualMachineInstance).Status.NodeName; n != "" {
				return []string{n}
			}
			return nil
		}); err != nil {
		return fmt.Errorf("indexing VirtualMachineInstances by Node: %w", err)
	}
	sourceMeta, err := newSourceMetadataCluster(mgr)
	if err != nil {
		return fmt.Errorf("creating the cache of source metadata: %w", err)
	}
	if err := mgr.Add(sourceMeta); err != nil {
		return fmt.Errorf("adding the cache of source metadata: %w", err)
	}
	if r.Sources == nil {
		r.Sources = &SourceReader{Metadata: sourceMeta.GetCache(), Live: mgr.GetAPIReader()}
	}
	sourceSecret, sourceConfigMap := &metav1.PartialObjectMetadata{}, &metav1.PartialObjectMetadata{}
	sourceSecret.SetGroupVersionKind(secretGVK)
	sourceConfigMap.SetGroupVersionKind(configMapGVK)
	r.retry = make(chan event.GenericEvent, retryBuffer)
	// One throttle for the three kinds of events a VM brings.
	storm := newThrottle(instanceEventInterval)
	return ctrl.NewControllerManagedBy(mgr).
		For(&imdsv1alpha1.MetadataService{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(r.retry, &handler.EnqueueRequestForObject{})).
		// A service's arrival, change or departure can change which service
		// wins each VMI, and so the others' conflicts.
		Watches(&imdsv1alpha1.MetadataService{}, handler.EnqueueRequestsFromMapFunc(r.siblingServices),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A boot storm brings events of VMIs, launcher Pods and payload
		// Secrets by the thousand: they share reconciles (throttledEnqueue).
		Watches(&kubevirtv1.VirtualMachineInstance{}, throttledEnqueue(r.servicesForInstance, storm),
			builder.WithPredicates(instanceChanged)).
		Watches(&corev1.Secret{}, throttledEnqueue(r.servicesForPayloadSecret, storm),
			builder.WithPredicates(isPayloadSecret)).
		// Sources: their metadata only, from a cache of its own.
		WatchesRawSource(source.Kind[client.Object](sourceMeta.GetCache(), sourceSecret,
			handler.EnqueueRequestsFromMapFunc(r.servicesForSourceSecret), isSourceSecret)).
		WatchesRawSource(source.Kind[client.Object](sourceMeta.GetCache(), sourceConfigMap,
			handler.EnqueueRequestsFromMapFunc(r.servicesForConfigMap))).
		// The EC2 placement of the VMs on a Node follows its topology labels.
		// Only their metadata is cached: a Node's status is large and
		// changes every few seconds.
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.servicesForNode),
			builder.WithPredicates(topologyChanged), builder.OnlyMetadata).
		// Served VMIs whose launcher Pod lacks the sidecar are reported.
		Watches(&corev1.Pod{}, throttledEnqueue(r.servicesForLauncherPod, storm),
			builder.WithPredicates(launcherPodChanged)).
		Named("metadataservice").
		Complete(r)
}

// servicesForInstance enqueues the services that select a VMI, and the one
// holding its payload (which may no longer select it).
func (r *MetadataServiceReconciler) servicesForInstance(ctx context.Context, o client.Object) []reconcile.Request {
	var services imdsv1alpha1.MetadataServiceList
	if err := r.List(ctx, &services, client.InNamespace(o.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "listing MetadataServices for a VirtualMachineInstance event")
		return nil
	}
	var reqs []reconcile.Request
	seen := map[string]bool{}
	add := func(name string) {
		if name != "" && !seen[name] {
			seen[name] = true
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}})
		}
	}
	for i := range services.Items {
		if selectorFor(&services.Items[i]).Matches(labelSet(o.GetLabels())) {
			add(services.Items[i].Name)
		}
	}
	var secret corev1.Secret
	key := types.NamespacedName{Namespace: o.GetNamespace(), Name: imdsv1alpha1.PayloadSecretName(o.GetName())}
	if err := r.Get(ctx, key, &secret, readOnlyGet); err == nil {
		add(secret.Labels[imdsv1alpha1.LabelMetadataService])
	}
	return reqs
}

// nodeNameIndex indexes VMIs by status.nodeName.
const nodeNameIndex = "imds.kubevirt.io/node-name"

// topologyChanged passes Node updates that change a topology label (and
// nothing else: Nodes update their status every few seconds).
var topologyChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		for _, l := range []string{corev1.LabelTopologyRegion, corev1.LabelTopologyZone} {
			if e.ObjectOld.GetLabels()[l] != e.ObjectNew.GetLabels()[l] {
				return true
			}
		}
		return false
	},
}

// servicesForNode enqueues the services of the VMIs running on a Node.
func (r *MetadataServiceReconciler) servicesForNode(ctx context.Context, o client.Object) []reconcile.Request {
	var vmis kubevirtv1.VirtualMachineInstanceList
	if err := r.List(ctx, &vmis, client.MatchingFields{nodeNameIndex: o.GetName()}, readOnlyList); err != nil {
		log.FromContext(ctx).Error(err, "listing the VirtualMachineInstances of a Node", "node", o.GetName())
		return nil
	}
	seen := map[reconcile.Request]bool{}
	var reqs []reconcile.Request
	for i := range vmis.Items {
		for _, req := range r.servicesForInstance(ctx, &vmis.Items[i]) {
			if !seen[req] {
				seen[req] = true
				reqs = append(reqs, req)
			}
		}
	}
	return reqs
}

// siblingServices enqueues every other MetadataService in the namespace.
func (r *MetadataServiceReconciler) siblingServices(ctx context.Context, o client.Object) []reconcile.Request {
	var services imdsv1alpha1.MetadataServiceList
	if err := r.List(ctx, &services, client.InNamespace(o.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "listing MetadataServices in the namespace")
		return nil
	}
	var reqs []reconcile.Request
	for _, s := range services.Items {
		if s.Name != o.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
		}
	}
	return reqs
}

// isPayloadSecret passes events of the payload Secrets the operator writes,
// and isSourceSecret those of other Secrets; an update that adds or removes
// the managed-by label passes both, as its old and new objects would be
// mapped.
var isPayloadSecret, isSourceSecret = secretKindPredicate(true), secretKindPredicate(false)

func secretKindPredicate(payload bool) predicate.Funcs {
	is := func(o client.Object) bool {
		return (o.GetLabels()[imdsv1alpha1.LabelManagedBy] == imdsv1alpha1.ManagedByValue) == payload
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return is(e.Object) },
		UpdateFunc:  func(e event.UpdateEvent) bool { return is(e.ObjectOld) || is(e.ObjectNew) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return is(e.Object) },
		GenericFunc: func(e event.GenericEvent) bool { return is(e.Object) },
	}
}

// servicesForPayloadSecret enqueues the service owning a payload Secret, to
// repair edits and deletions.
func (r *MetadataServiceReconciler) servicesForPayloadSecret(_ context.Context, o client.Object) []reconcile.Request {
	if o.GetLabels()[imdsv1alpha1.LabelManagedBy] != imdsv1alpha1.ManagedByValue {
		return nil // the old or new object of an update that changed the label
	}
	uid := types.UID(o.GetLabels()[imdsv1alpha1.LabelInstanceUID])
	r.current.forget(uid)
	// The cache has the Secret: the reconcile compares it from now on.
	r.claimed.Delete(uid)
	if name := o.GetLabels()[imdsv1alpha1.LabelMetadataService]; name != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	}
	return nil
}

// servicesForSourceSecret enqueues the services reading a source Secret.
func (r *MetadataServiceReconciler) servicesForSourceSecret(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetLabels()[imdsv1alpha1.LabelManagedBy] == imdsv1alpha1.ManagedByValue {
		return nil
	}
	return r.servicesReading(ctx, "Secret", o)
}

func (r *MetadataServiceReconciler) servicesForConfigMap(ctx context.Context, o client.Object) []reconcile.Request {
	return r.servicesReading(ctx, "ConfigMap", o)
}

// servicesReading enqueues the services reading the source o of kind; the
// content held of a source no service reads is dropped.
func (r *MetadataServiceReconciler) servicesReading(ctx context.Context, kind string, o client.Object) []reconcile.Request {
	ref := sourceRefKey(kind, o.GetName())
	var services imdsv1alpha1.MetadataServiceList
	if err := r.List(ctx, &services, client.InNamespace(o.GetNamespace()), client.MatchingFields{sourceRefIndex: ref}); err != nil {
		log.FromContext(ctx).Error(err, "listing MetadataServices by source", "source", ref)
		return nil
	}
	if len(services.Items) == 0 && r.Sources != nil {
		r.Sources.Forget(kind, client.ObjectKeyFromObject(o))
	}
	reqs := make([]reconcile.Request, 0, len(services.Items))
	for _, s := range services.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
	}
	return reqs
}

// instanceChanged passes VMI events that can change a payload or the
// selection: not the frequent status updates (phase, conditions, guest OS
// info) that leave them alone.
var instanceChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*kubevirtv1.VirtualMachineInstance)
		cur, okNew := e.ObjectNew.(*kubevirtv1.VirtualMachineInstance)
		if !okOld || !okNew {
			return true
		}
		return old.Generation != cur.Generation ||
			!equality.Semantic.DeepEqual(old.Labels, cur.Labels) ||
			!equality.Semantic.DeepEqual(old.Annotations, cur.Annotations) ||
			!equality.Semantic.DeepEqual(old.Spec, cur.Spec) ||
			!equality.Semantic.DeepEqual(old.Status.Interfaces, cur.Status.Interfaces) ||
			old.DeletionTimestamp.IsZero() != cur.DeletionTimestamp.IsZero() ||
			// Scheduling places it: the EC2 placement follows its Node.
			old.Status.NodeName != cur.Status.NodeName
	},
}
