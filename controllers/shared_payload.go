package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// A MetadataService's user-data and vendor-data are the same for every
// instance it serves, so they are stored once, in the service's shared
// payload Secret, and each instance's document refers to it
// (payload.Document.Shared): 10,000 instances of a 16 KiB cloud-config then
// store one copy instead of 10,000, and an edit of it is one write. The Pod
// webhook mounts both Secrets in one projected volume.
//
// An instance's document holds its own copy (inline) instead when the shared
// document may not be beside it: the shared Secret cannot be stored as
// rendered, or one of the instance's launcher Pods runs a sidecar whose
// volume does not carry this service's shared Secret (a Pod injected before
// the operator shared payloads, or before the instance changed service). The
// Pod webhook, writing ahead of the controller, stores the shared Secret
// itself when the cache does not show it yet (storeSharedAhead).

// desiredSharedSecret is the shared payload Secret of mds for src, owned by
// the service so that it goes with it.
func desiredSharedSecret(mds *imdsv1alpha1.MetadataService, src *resolvedSources) (*corev1.Secret, error) {
	doc := &payload.SharedDocument{MetadataService: mds.Name, UserData: src.UserData, VendorData: src.VendorData}
	data, err := doc.Seal()
	if err != nil {
		return nil, err
	}
	owner := payloadOwner(mds, imdsv1alpha1.GroupVersion.WithKind("MetadataService"))
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      imdsv1alpha1.SharedPayloadSecretName(mds.Name),
			Namespace: mds.Namespace,
			Labels: map[string]string{
				imdsv1alpha1.LabelManagedBy:       imdsv1alpha1.ManagedByValue,
				imdsv1alpha1.LabelMetadataService: mds.Name,
			},
			Annotations:     map[string]string{imdsv1alpha1.AnnotationPayloadHash: doc.Hash},
			OwnerReferences: []metav1.OwnerReference{*owner},
		},
		Type: PayloadSecretType,
		Data: map[string][]byte{payload.SharedKey: data},
	}, nil
}

// ensureSharedPayload writes the shared payload Secret of mds unless it is
// current, and reports whether the instances' documents may refer to it.
func (r *MetadataServiceReconciler) ensureSharedPayload(ctx context.Context, mds *imdsv1alpha1.MetadataService, src *resolvedSources) (bool, error) {
	want, err := desiredSharedSecret(mds, src)
	if err != nil {
		return false, err
	}
	if _, _, err := r.ensureOwnSecret(ctx, want); err != nil {
		return false, fmt.Errorf("shared payload: %w", err)
	}
	return true, nil
}

// sharedStored renders the shared payload Secret of mds for src and
// reports whether the cache holds it so: the Pod webhook, rendering ahead of
// the controller, has it stored before it writes a document that refers to
// it (expectShared, storeSharedAhead).
func (r *MetadataServiceReconciler) sharedStored(ctx context.Context, mds *imdsv1alpha1.MetadataService, src *resolvedSources) (*corev1.Secret, bool, error) {
	want, err := desiredSharedSecret(mds, src)
	if err != nil {
		return nil, false, err
	}
	var have corev1.Secret
	switch err := r.Get(ctx, client.ObjectKeyFromObject(want), &have); {
	case apierrors.IsNotFound(err):
		return want, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("reading Secret %s: %w", want.Name, err)
	}
	return want, have.Type == want.Type && slices.Equal(have.Data[payload.SharedKey], want.Data[payload.SharedKey]), nil
}

// sharedAheadTTL bounds how long a shared payload Secret written ahead of
// the controller (storeSharedAhead) counts as stored without the cache
// showing it: the cache shows it long before.
const sharedAheadTTL = time.Minute

// sharedAhead is a service's shared payload Secret that the Pod webhook's
// documents refer to while the cache does not show it: the Secret as
// rendered, its data's digest, and when it was written (zero until then).
type sharedAhead struct {
	want      *corev1.Secret
	digest    string
	writtenAt time.Time
}

// sharedAheadKey is the key of mds's shared payload Secret in
// MetadataServiceReconciler.sharedAhead.
func sharedAheadKey(mds *imdsv1alpha1.MetadataService) string {
	return mds.Namespace + "/" + imdsv1alpha1.SharedPayloadSecretName(mds.Name)
}

// expectShared records that a document rendered at admission refers to
// want, the shared payload Secret of mds, which the cache does not show:
// storeSharedAhead writes it before that document. One written moments ago
// with the same content is not written again.
func (r *MetadataServiceReconciler) expectShared(mds *imdsv1alpha1.MetadataService, want *corev1.Secret) {
	key, digest := sharedAheadKey(mds), dataDigest(want.Data)
	if v, ok := r.sharedAhead.Load(key); ok {
		if a := v.(sharedAhead); a.digest == digest && (a.writtenAt.IsZero() || time.Since(a.writtenAt) < sharedAheadTTL) {
			return
		}
	}
	r.sharedAhead.Store(key, sharedAhead{want: want, digest: digest})
}

// storeSharedAhead writes the shared payload Secret of mds that expectShared
// recorded, before the Pod webhook writes an instance's document that refers
// to it. A service and its VMs applied together (a boot storm, a GitOps
// sync) are admitted before the controller's first reconcile of the
// service; without it each of those VMs would hold its own copy of the
// user-data, which that reconcile then rewrites: one more write per VM.
// Concurrent writers share one write; with nothing recorded (the cache
// showed the Secret at admission) there is nothing to do.
func (r *MetadataServiceReconciler) storeSharedAhead(ctx context.Context, mds *imdsv1alpha1.MetadataService) error {
	key := sharedAheadKey(mds)
	v, ok := r.sharedAhead.Load(key)
	if !ok || !v.(sharedAhead).writtenAt.IsZero() {
		return nil
	}
	a := v.(sharedAhead)
	_, err, _ := r.sharedWrites.Do(key+"/"+a.digest, func() (any, error) {
		// Create fills in the object it is given: write a copy.
		if _, _, err := r.ensureOwnSecret(ctx, a.want.DeepCopy()); err != nil {
			return nil, fmt.Errorf("shared payload: %w", err)
		}
		written := a
		written.writtenAt = time.Now()
		r.sharedAhead.CompareAndSwap(key, a, written)
		return nil, nil
	})
	return err
}

// holdsOwnCopy reports whether vmi's document must hold its own user-data
// and vendor-data, given its launcher Pods: one of them runs a sidecar (or
// may) and its volumes do not carry the shared Secret named shared. A VMI
// without Pods yet shares: the Pod webhook mounts the shared Secret of the
// service it renders for.
func holdsOwnCopy(vmi *kubevirtv1.VirtualMachineInstance, pods []*corev1.Pod, shared string) bool {
	for _, pod := range pods {
		if !podActive(pod) || migratedAway(vmi, pod) || !HasSidecar(pod) {
			continue
		}
		if !mountsSecret(pod, shared) {
			return true
		}
	}
	return false
}

// mountsSecret reports whether a projected volume of pod (as the Pod webhook
// mounts the payloads) carries the Secret name.
func mountsSecret(pod *corev1.Pod, name string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool {
			return s.Secret != nil && s.Secret.Name == name
		}) {
			return true
		}
	}
	return false
}

// launcherPodsOf returns the launcher Pods of vmi from the cache.
func (r *MetadataServiceReconciler) launcherPodsOf(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) ([]*corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(vmi.Namespace), client.MatchingLabels{
		kubevirtv1.AppLabel:       LauncherAppValue,
		kubevirtv1.CreatedByLabel: string(vmi.UID),
	}, readOnlyList); err != nil {
		return nil, fmt.Errorf("listing virt-launcher Pods: %w", err)
	}
	out := make([]*corev1.Pod, len(pods.Items))
	for i := range pods.Items {
		out[i] = &pods.Items[i]
	}
	return out, nil
}

// referShared moves doc's user-data and vendor-data out to the shared
// document of mds.
func referShared(doc *payload.Document, mds *imdsv1alpha1.MetadataService) {
	doc.UserData, doc.VendorData = nil, nil
	doc.Shared = &payload.SharedRef{MetadataService: mds.Name}
}

// podsByInstance groups launcher Pods by the UID of their VMI.
func podsByInstance(pods []corev1.Pod) map[types.UID][]*corev1.Pod {
	out := map[types.UID][]*corev1.Pod{}
	for i := range pods {
		uid := types.UID(pods[i].Labels[kubevirtv1.CreatedByLabel])
		out[uid] = append(out[uid], &pods[i])
	}
	return out
}
