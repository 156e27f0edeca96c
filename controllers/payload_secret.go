package controllers

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// PayloadSecretType is the type of payload Secrets, so that they stand out in
// `kubectl get secrets` and no other tool mistakes them for its own.
const PayloadSecretType corev1.SecretType = "imds.kubevirt.io/payload"

func labelSet(l map[string]string) labels.Set { return labels.Set(l) }

// payloadOwner is the controller reference that makes a payload Secret go
// with owner. It does not block the owner's deletion: that would need update
// rights on the owner's finalizers for nothing, since the payload is useless
// once the owner is gone.
func payloadOwner(owner metav1.Object, gvk schema.GroupVersionKind) *metav1.OwnerReference {
	ref := metav1.NewControllerRef(owner, gvk)
	ref.BlockOwnerDeletion = nil
	return ref
}

// desiredPayloadSecret is the Secret holding doc for vmi, owned by the VMI so
// that it is garbage-collected with it.
func desiredPayloadSecret(mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance, doc *payload.Document) (*corev1.Secret, error) {
	data, err := doc.Seal()
	if err != nil {
		return nil, err
	}
	owner := payloadOwner(vmi, kubevirtv1.VirtualMachineInstanceGroupVersionKind)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      imdsv1alpha1.PayloadSecretName(vmi.Name),
			Namespace: vmi.Namespace,
			Labels: map[string]string{
				imdsv1alpha1.LabelManagedBy:       imdsv1alpha1.ManagedByValue,
				imdsv1alpha1.LabelMetadataService: mds.Name,
				imdsv1alpha1.LabelInstanceUID:     string(vmi.UID),
			},
			Annotations: map[string]string{
				imdsv1alpha1.AnnotationInstanceName: vmi.Name,
				imdsv1alpha1.AnnotationPayloadHash:  doc.Hash,
				imdsv1alpha1.AnnotationServe:        serveAnnotation(doc.Serve),
			},
			OwnerReferences: []metav1.OwnerReference{*owner},
		},
		Type: PayloadSecretType,
		Data: map[string][]byte{payload.SecretKey: data},
	}, nil
}

// RenderPayload renders vmi's payload as mds serves it, from the sources as
// the cache has them, without writing anything; it fails when a source is
// missing or invalid, as the reconcile would. The document refers to the
// service's shared document even before that is stored: WritePayload stores
// it first (expectShared).
func (r *MetadataServiceReconciler) RenderPayload(ctx context.Context, mds *imdsv1alpha1.MetadataService,
	vmi *kubevirtv1.VirtualMachineInstance) (*payload.Document, error) {
	src, err := r.resolveSources(ctx, mds)
	if err != nil {
		return nil, err
	}
	doc := timedRender(mds, src, vmi, r.ec2Inputs(ctx, vmi))
	want, stored, err := r.sharedStored(ctx, mds, src)
	if err != nil {
		return doc, err
	}
	if stored {
		r.sharedAhead.Delete(sharedAheadKey(mds))
	}
	pods, err := r.launcherPodsOf(ctx, vmi)
	if err != nil {
		return nil, err
	}
	if !holdsOwnCopy(vmi, pods, imdsv1alpha1.SharedPayloadSecretName(mds.Name)) {
		referShared(doc, mds)
		if !stored {
			r.expectShared(mds, want)
		}
	}
	return doc, nil
}

// payloadClaimTTL bounds how long a claim on a payload write (claim) stands
// when the cache never sees its Secret (created and deleted at once, say):
// well past the webhook's write timeout.
const payloadClaimTTL = time.Minute

// ClaimPayload claims the write of vmi's payload for the Pod webhook, before
// its admission returns: false when the controller (or another admission)
// in this process is writing it already, and the webhook need not.
func (r *MetadataServiceReconciler) ClaimPayload(vmi *kubevirtv1.VirtualMachineInstance) bool {
	return r.claim(vmi.UID)
}

// claim claims the write of uid's payload: until the cache sees the Secret
// (servicesForPayloadSecret), or the write ends without writing
// (endClaim), or payloadClaimTTL has passed, no other writer in this
// process writes it. The webhook writes the payloads of launcher Pods that
// arrive before the controller's reconcile, and the controller those of
// VMIs whose Pod has not come yet; without claims each, finding the Secret
// not yet in the cache, created it too, and a tenth to a quarter of the
// payload creates of a boot storm failed with AlreadyExists.
func (r *MetadataServiceReconciler) claim(uid types.UID) bool {
	now := time.Now()
	for {
		at, held := r.claimed.LoadOrStore(uid, now)
		if !held {
			return true
		}
		if time.Since(at.(time.Time)) < payloadClaimTTL {
			return false
		}
		if r.claimed.CompareAndSwap(uid, at, now) {
			return true // an expired claim, taken over
		}
	}
}

// endClaim ends a claim whose write brings no event to end it: it failed,
// or found the Secret current.
func (r *MetadataServiceReconciler) endClaim(uid types.UID, wrote bool, err error) {
	if err != nil || !wrote {
		r.claimed.Delete(uid)
	}
}

// retryService reconciles mds again after a write the webhook claimed has
// failed: a reconcile may have left the VMI to it. It never blocks (see
// retryBuffer).
func (r *MetadataServiceReconciler) retryService(mds *imdsv1alpha1.MetadataService) {
	if r.retry == nil {
		return // no controller in this process (another replica leads)
	}
	select {
	case r.retry <- event.GenericEvent{Object: mds}:
	default:
	}
}

// WritePayload writes doc into vmi's payload Secret unless it is current.
// The Pod webhook calls it when a launcher Pod arrives before the reconcile
// that would write the Secret: in a boot storm, reconciles lag VM creation by
// seconds. Both render from the same objects, so whichever writes first, the
// other finds the Secret current. A document that refers to the service's
// shared document is written after that is stored (storeSharedAhead).
func (r *MetadataServiceReconciler) WritePayload(ctx context.Context, mds *imdsv1alpha1.MetadataService,
	vmi *kubevirtv1.VirtualMachineInstance, doc *payload.Document) error {
	wrote, err := r.writeDocument(ctx, mds, vmi, doc)
	r.endClaim(vmi.UID, wrote, err)
	if err != nil {
		r.retryService(mds)
	}
	return err
}

// writeDocument stores the shared document doc refers to, if any, then
// doc; it reports whether it wrote doc.
func (r *MetadataServiceReconciler) writeDocument(ctx context.Context, mds *imdsv1alpha1.MetadataService,
	vmi *kubevirtv1.VirtualMachineInstance, doc *payload.Document) (bool, error) {
	if doc.Shared != nil {
		if err := r.storeSharedAhead(ctx, mds); err != nil {
			return false, err
		}
	}
	return r.ensurePayloadSecret(ctx, mds, vmi, doc)
}

// ensurePayloadSecret creates or updates the payload Secret of vmi, writing
// only when content, labels, annotations or owner differ. It reports whether
// it wrote. A Secret is always written whole, so a guest never sees a
// half-written payload.
func (r *MetadataServiceReconciler) ensurePayloadSecret(ctx context.Context, mds *imdsv1alpha1.MetadataService,
	vmi *kubevirtv1.VirtualMachineInstance, doc *payload.Document) (wrote bool, err error) {
	start, existed := time.Now(), false
	defer func() { observeWrite(start, wrote, existed, err) }()
	want, err := desiredPayloadSecret(mds, vmi, doc)
	if err != nil {
		return false, err
	}
	wrote, existed, err = r.ensureOwnSecret(ctx, want)
	return wrote, err
}

// ensureOwnSecret creates or updates want, a Secret of the operator's own,
// writing only when content, labels, annotations or owner differ. It reports
// whether it wrote, and whether the Secret existed.
func (r *MetadataServiceReconciler) ensureOwnSecret(ctx context.Context, want *corev1.Secret) (wrote, existed bool, err error) {
	var have corev1.Secret
	err = r.Get(ctx, client.ObjectKeyFromObject(want), &have)
	switch {
	case apierrors.IsNotFound(err):
		err := r.Create(ctx, want)
		if apierrors.IsAlreadyExists(err) {
			// The Pod webhook (WritePayload) or another writer was first;
			// its create event brings this service back to compare. Or it
			// is a user's Secret of the same name, which the cache (the
			// operator's own objects only) does not show.
			if err := r.sourceReader().Live.Get(ctx, client.ObjectKeyFromObject(want), &have); err != nil {
				return false, existed, fmt.Errorf("reading Secret %s: %w", want.Name, err)
			}
			if have.Type != want.Type {
				return false, existed, notOurs(&have, want)
			}
			return false, existed, nil
		}
		if err != nil {
			return false, existed, fmt.Errorf("creating Secret %s: %w", want.Name, err)
		}
		return true, existed, nil
	case err != nil:
		return false, existed, fmt.Errorf("reading Secret %s: %w", want.Name, err)
	}
	existed = true
	if have.Type != want.Type {
		return false, existed, notOurs(&have, want)
	}
	if sameData(&have, want.Data) &&
		isSubset(want.Labels, have.Labels) && isSubset(want.Annotations, have.Annotations) &&
		equality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences) {
		return false, existed, nil
	}
	updated := have.DeepCopy()
	updated.Data = want.Data
	updated.OwnerReferences = want.OwnerReferences
	if updated.Labels == nil {
		updated.Labels = map[string]string{}
	}
	maps.Copy(updated.Labels, want.Labels)
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	maps.Copy(updated.Annotations, want.Annotations)
	delete(updated.Annotations, cachedDataDigest)
	if err := r.Update(ctx, updated); err != nil {
		return false, existed, fmt.Errorf("updating Secret %s: %w", want.Name, err)
	}
	return true, existed, nil
}

// notOurs is the error for a Secret of a payload's name that is not a
// payload Secret (a user's): it is never overwritten.
func notOurs(have, want *corev1.Secret) error {
	return fmt.Errorf("secret %s exists with type %q, not %q: rename or delete it", want.Name, have.Type, want.Type)
}

func isSubset(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// unknownInstanceGrace is how long a payload Secret of a VMI the cache does
// not know is left alone: far longer than any cache lag.
const unknownInstanceGrace = 2 * time.Minute

// removeStalePayloads deletes the payload Secrets that service name wrote for
// VMIs no service serves any more. A Secret whose VMI another service now wins
// is left for the winner to overwrite, so the guest never sees its payload
// vanish in a hand-over. s is nil when the service itself is gone.
func (r *MetadataServiceReconciler) removeStalePayloads(ctx context.Context, namespace, name string, s *scope) (int, error) {
	var secrets corev1.SecretList
	// Instances' payloads only: the service's shared one goes with the
	// service (owner reference).
	if err := r.List(ctx, &secrets, client.InNamespace(namespace), client.MatchingLabels{
		imdsv1alpha1.LabelManagedBy:       imdsv1alpha1.ManagedByValue,
		imdsv1alpha1.LabelMetadataService: name,
	}, client.HasLabels{imdsv1alpha1.LabelInstanceUID}, readOnlyList); err != nil {
		return 0, fmt.Errorf("listing payload Secrets: %w", err)
	}
	if len(secrets.Items) == 0 {
		return 0, nil
	}
	if s == nil {
		s = &scope{}
		var services imdsv1alpha1.MetadataServiceList
		if err := r.List(ctx, &services, client.InNamespace(namespace)); err != nil {
			return 0, fmt.Errorf("listing MetadataServices: %w", err)
		}
		s.services = services.Items
		var vmis kubevirtv1.VirtualMachineInstanceList
		if err := r.List(ctx, &vmis, client.InNamespace(namespace), readOnlyList); err != nil {
			return 0, fmt.Errorf("listing VirtualMachineInstances: %w", err)
		}
		s.instances = map[types.UID]*kubevirtv1.VirtualMachineInstance{}
		for i := range vmis.Items {
			s.instances[vmis.Items[i].UID] = &vmis.Items[i]
		}
	}
	removed := 0
	for i := range secrets.Items {
		secret := &secrets.Items[i]
		uid := types.UID(secret.Labels[imdsv1alpha1.LabelInstanceUID])
		if _, served := s.served[uid]; served || s.kept[secret.Name] {
			continue
		}
		vmi, ok := s.instances[uid]
		if ok && vmi.DeletionTimestamp.IsZero() && winnerFor(s.services, vmi.Labels) != nil {
			continue
		}
		if !ok && time.Since(secret.CreationTimestamp.Time) < unknownInstanceGrace {
			// The Pod webhook writes the payload of a VMI this cache may not
			// have seen yet (WritePayload); a deleted VMI's payload goes
			// with it through its owner reference anyway.
			continue
		}
		rv, id := secret.ResourceVersion, secret.UID
		err := r.Delete(ctx, secret, client.Preconditions{UID: &id, ResourceVersion: &rv})
		if err != nil && !apierrors.IsNotFound(err) {
			return removed, &problem{Reason: imdsv1alpha1.ReasonPayloadWriteFailed,
				Message: fmt.Sprintf("deleting stale payload Secret %s: %v", secret.Name, err)}
		}
		log.FromContext(ctx).V(1).Info("removed stale payload", "secret", secret.Name)
		removed++
	}
	return removed, nil
}
