// Package explain tells a user, from the API server alone, what a
// VirtualMachineInstance's guest is served at 169.254.169.254 and by which
// MetadataService, or why it is not served. It backs `kubectl imds show`.
//
// What it shows is what the sidecar serves: the payload Secret the operator
// wrote, rendered by the sidecar's own server (sidecar/server) in memory,
// never a re-implementation. Why a VMI is not served comes from the
// controller's own rules (selection, precedence, Unservable, the sidecar
// check of launcher Pods) and from what the controller reported in the
// service's status.unservableInstances, which also covers what only the
// manager's flags decide (PodSecurityForbidsSidecar).
package explain

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
)

// Reasons of findings that are not condition reasons of the API.
const (
	// ReasonInstanceNotFound: there is no VMI of that name (the VM is not
	// running, or the name is wrong).
	ReasonInstanceNotFound = "InstanceNotFound"
	// ReasonInstanceDeleting: the VMI is being deleted; no service serves it.
	ReasonInstanceDeleting = "InstanceDeleting"
	// ReasonNoMetadataService: the VMI's namespace has no MetadataService.
	ReasonNoMetadataService = "NoMetadataService"
	// ReasonSelectorMismatch: no MetadataService of the namespace selects the
	// VMI's labels.
	ReasonSelectorMismatch = "SelectorMismatch"
	// ReasonPayloadMissing: the VMI is served but its payload Secret does not
	// exist (yet).
	ReasonPayloadMissing = "PayloadMissing"
	// ReasonPayloadInvalid: the payload Secret does not hold a valid payload
	// document, so the sidecar keeps serving its last good one.
	ReasonPayloadInvalid = "PayloadInvalid"
	// ReasonDialectDisabled: the serving MetadataService does not enable the
	// dialect asked for.
	ReasonDialectDisabled = "DialectDisabled"
	// ReasonPayloadFromOtherService: the payload Secret was last written for
	// another MetadataService; the sidecar serves it until the winner's
	// reconcile overwrites it.
	ReasonPayloadFromOtherService = "PayloadFromOtherService"
	// ReasonPodsUnreadable: the launcher Pods could not be read, so whether
	// they run the sidecar is unknown.
	ReasonPodsUnreadable = "LauncherPodsUnreadable"
)

// Finding is one thing about the VMI a user should know. A blocking finding
// means the guest is not served now.
type Finding struct {
	Reason   string
	Message  string
	Blocking bool
}

// Report is what Explain found.
type Report struct {
	// Instance is the VMI asked about.
	Instance types.NamespacedName
	// Service is the MetadataService that serves the VMI; "" when none does.
	Service string
	// Secret is the payload Secret's name; "" when none was found.
	Secret string
	// Hash is the served payload document's hash.
	Hash string
	// Dialects are the dialects the payload enables.
	Dialects []payload.Dialect
	// Dialect is the dialect Files are rendered in.
	Dialect Dialect
	// Findings say what keeps the VMI from being served, and what else is
	// worth knowing, blocking ones first.
	Findings []Finding
	// Files are the dialect's files as the sidecar serves them; empty when
	// there is no payload to render or the VMI cannot be served at all.
	Files []File
}

// Served reports whether the guest is served now: a MetadataService serves
// it, its payload exists and nothing blocks it.
func (r *Report) Served() bool {
	return r.Service != "" && r.Secret != "" && !slices.ContainsFunc(r.Findings, func(f Finding) bool { return f.Blocking })
}

func (r *Report) add(f Finding) {
	for _, have := range r.Findings {
		if have.Reason == f.Reason && have.Message == f.Message {
			return
		}
	}
	r.Findings = append(r.Findings, f)
}

// Explain reads the VMI namespace/name, the MetadataServices of its
// namespace, its launcher Pods and its payload Secret through c, and reports
// what its guest is served in dialect (DefaultDialect when empty), or why not.
// Errors are reserved for failures to read; a VMI that does not exist is a
// finding.
func Explain(ctx context.Context, c client.Reader, namespace, name string, dialect Dialect) (*Report, error) {
	rep := &Report{Instance: types.NamespacedName{Namespace: namespace, Name: name}, Dialect: dialect}
	if dialect != "" {
		if _, err := dialectSpec(dialect); err != nil {
			return nil, err
		}
	}
	var vmi kubevirtv1.VirtualMachineInstance
	if err := c.Get(ctx, rep.Instance, &vmi); apierrors.IsNotFound(err) {
		rep.add(Finding{Reason: ReasonInstanceNotFound, Blocking: true, Message: fmt.Sprintf(
			"VirtualMachineInstance %s/%s does not exist: the VM is not running, or it has another name (payloads exist only for running VMs)", namespace, name)})
		return rep, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading VirtualMachineInstance %s/%s: %w", namespace, name, err)
	}
	if !vmi.DeletionTimestamp.IsZero() {
		rep.add(Finding{Reason: ReasonInstanceDeleting, Blocking: true, Message: "the VirtualMachineInstance is being deleted; no MetadataService serves it any more"})
		return rep, nil
	}

	var services imdsv1alpha1.MetadataServiceList
	if err := c.List(ctx, &services, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("listing MetadataServices in namespace %s: %w", namespace, err)
	}
	mds := controllers.ServingMetadataService(services.Items, vmi.Labels)
	if mds == nil {
		rep.add(unselected(namespace, services.Items, vmi.Labels))
		return rep, nil
	}
	rep.Service = mds.Name
	if rep.Dialect == "" {
		rep.Dialect = DefaultDialect(mds)
	}
	explainServing(rep, mds, services.Items, &vmi)
	if err := explainPods(ctx, c, rep, &vmi); err != nil {
		return nil, err
	}
	if err := renderSecret(ctx, c, rep, mds, &vmi); err != nil {
		return nil, err
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool { return rep.Findings[i].Blocking && !rep.Findings[j].Blocking })
	return rep, nil
}

// unselected explains why no service selects a VMI with vmiLabels.
func unselected(namespace string, services []imdsv1alpha1.MetadataService, vmiLabels map[string]string) Finding {
	if len(services) == 0 {
		return Finding{Reason: ReasonNoMetadataService, Blocking: true, Message: fmt.Sprintf(
			"namespace %s has no MetadataService (a MetadataService serves the VMIs of its own namespace only)", namespace)}
	}
	parts := make([]string, 0, len(services))
	for i := range services {
		parts = append(parts, "MetadataService "+services[i].Name+" "+whyNotSelected(&services[i], vmiLabels))
	}
	slices.Sort(parts)
	return Finding{Reason: ReasonSelectorMismatch, Blocking: true, Message: fmt.Sprintf(
		"no MetadataService of namespace %s selects the VMI (labels %s): %s",
		namespace, labels.Set(vmiLabels).String(), strings.Join(parts, "; "))}
}

// whyNotSelected names the first requirement of mds's selector the labels
// fail, in the selector's own syntax.
func whyNotSelected(mds *imdsv1alpha1.MetadataService, vmiLabels map[string]string) string {
	if !mds.DeletionTimestamp.IsZero() {
		return "is being deleted"
	}
	sel, err := metav1.LabelSelectorAsSelector(&mds.Spec.Selector)
	if err != nil {
		return fmt.Sprintf("has an invalid spec.selector (%v) and selects nothing", err)
	}
	reqs, _ := sel.Requirements()
	set := labels.Set(vmiLabels)
	for _, req := range reqs {
		if req.Matches(set) {
			continue
		}
		have, ok := vmiLabels[req.Key()]
		switch {
		case !ok && req.Operator() != selection.DoesNotExist && req.Operator() != selection.NotIn:
			return fmt.Sprintf("requires %s, and the VMI has no label %s", req.String(), req.Key())
		default:
			return fmt.Sprintf("requires %s, and the VMI has %s=%s", req.String(), req.Key(), have)
		}
	}
	// Only a selector that matches would get here; precedence is not
	// asked about for an unselected VMI.
	return "selects it"
}

// explainServing adds what the controller knows about mds serving vmi: the
// services it wins over, and why it cannot serve it.
func explainServing(rep *Report, mds *imdsv1alpha1.MetadataService, services []imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance) {
	var losers []string
	for i := range services {
		s := &services[i]
		if s.UID == mds.UID || !s.DeletionTimestamp.IsZero() {
			continue
		}
		if sel, err := metav1.LabelSelectorAsSelector(&s.Spec.Selector); err == nil && sel.Matches(labels.Set(vmi.Labels)) {
			losers = append(losers, s.Name)
		}
	}
	if len(losers) > 0 {
		slices.Sort(losers)
		rep.add(Finding{Reason: imdsv1alpha1.ReasonConflict, Message: fmt.Sprintf(
			"also selected by MetadataService %s, which %s takes precedence over (higher spec.priority, then older, then name)",
			strings.Join(losers, ", "), mds.Name)})
	}
	// The controller's verdict, as it reported it: it alone knows its flags
	// (PodSecurityForbidsSidecar depends on --sidecar-network-setup).
	for _, u := range mds.Status.UnservableInstances {
		if u.Name == vmi.Name {
			rep.add(Finding{Reason: u.Reason, Message: u.Message, Blocking: true})
		}
	}
	// The same rule, from the objects as they are now, in case the status
	// is behind (or its list was cut at its bound).
	if reason, message := controllers.Unservable(mds, vmi); reason != "" {
		rep.add(Finding{Reason: reason, Message: message, Blocking: true})
	}
	mode := controllers.GuestDiscoveryOf(mds)
	if want, have, applies := controllers.DiscoveryValue(mode, vmi); applies && have != want {
		msg := fmt.Sprintf("the VMI lacks the SMBIOS value %q of guestDiscovery %s, so cloud-init may not look for the service", want, mode)
		if have != "" {
			msg = fmt.Sprintf("the VMI sets %q itself where guestDiscovery %s needs %q (never overwritten), so cloud-init may not look for the service", have, mode, want)
		}
		rep.add(Finding{Reason: imdsv1alpha1.ReasonGuestDiscoveryNotApplied, Message: msg})
	}
	for _, t := range []string{imdsv1alpha1.ConditionReady, imdsv1alpha1.ConditionDegraded} {
		c := meta.FindStatusCondition(mds.Status.Conditions, t)
		bad := c != nil && (t == imdsv1alpha1.ConditionReady && c.Status != metav1.ConditionTrue ||
			t == imdsv1alpha1.ConditionDegraded && c.Status == metav1.ConditionTrue)
		if bad {
			rep.add(Finding{Reason: c.Reason, Message: fmt.Sprintf("MetadataService %s is %s=%s: %s", mds.Name, t, c.Status, c.Message)})
		}
	}
}

// explainPods reports active launcher Pods of vmi without the sidecar.
func explainPods(ctx context.Context, c client.Reader, rep *Report, vmi *kubevirtv1.VirtualMachineInstance) error {
	var pods corev1.PodList
	err := c.List(ctx, &pods, client.InNamespace(vmi.Namespace), client.MatchingLabels{
		kubevirtv1.AppLabel: controllers.LauncherAppValue, kubevirtv1.CreatedByLabel: string(vmi.UID)})
	if apierrors.IsForbidden(err) {
		rep.add(Finding{Reason: ReasonPodsUnreadable, Message: fmt.Sprintf(
			"whether the virt-launcher Pod runs the metadata sidecar is unknown: %v", err)})
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing the virt-launcher Pods of %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if controllers.RunsWithoutSidecar(vmi, pod) {
			rep.add(Finding{Reason: imdsv1alpha1.ReasonSidecarMissing, Blocking: true, Message: fmt.Sprintf(
				"virt-launcher Pod %s runs without the metadata sidecar (the Pod webhook was unavailable or skipped it): restart or live-migrate the VM to get it", pod.Name)})
		}
	}
	return nil
}

// renderSecret reads vmi's payload Secret and renders it in rep.Dialect.
func renderSecret(ctx context.Context, c client.Reader, rep *Report, mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance) error {
	name := imdsv1alpha1.PayloadSecretName(vmi.Name)
	var secret corev1.Secret
	err := c.Get(ctx, types.NamespacedName{Namespace: vmi.Namespace, Name: name}, &secret)
	if apierrors.IsNotFound(err) {
		rep.add(Finding{Reason: ReasonPayloadMissing, Blocking: true, Message: fmt.Sprintf(
			"payload Secret %s does not exist yet: MetadataService %s writes it (see its Ready condition)", name, mds.Name)})
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading payload Secret %s/%s: %w", vmi.Namespace, name, err)
	}
	rep.Secret = name
	if from := secret.Labels[imdsv1alpha1.LabelMetadataService]; from != mds.Name {
		rep.add(Finding{Reason: ReasonPayloadFromOtherService, Message: fmt.Sprintf(
			"payload Secret %s was written for MetadataService %q; the sidecar serves it until %s's reconcile rewrites it", name, from, mds.Name)})
	}
	raw := secret.Data[payload.SecretKey]
	doc, err := payload.Parse(raw)
	if err != nil {
		rep.add(Finding{Reason: ReasonPayloadInvalid, Blocking: true, Message: fmt.Sprintf(
			"payload Secret %s, key %s: %v (the sidecar keeps serving its last good document)", name, payload.SecretKey, err)})
		return nil
	}
	var sharedRaw []byte
	if doc.Shared != nil {
		sharedName := imdsv1alpha1.SharedPayloadSecretName(doc.Shared.MetadataService)
		var shared corev1.Secret
		err := c.Get(ctx, types.NamespacedName{Namespace: vmi.Namespace, Name: sharedName}, &shared)
		if apierrors.IsNotFound(err) {
			rep.add(Finding{Reason: ReasonPayloadMissing, Blocking: true, Message: fmt.Sprintf(
				"shared payload Secret %s, which payload Secret %s refers to for its user-data and vendor-data, does not exist: MetadataService %s writes it",
				sharedName, name, doc.Shared.MetadataService)})
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading shared payload Secret %s/%s: %w", vmi.Namespace, sharedName, err)
		}
		sharedRaw = shared.Data[payload.SharedKey]
		sharedDoc, err := payload.ParseShared(sharedRaw)
		if err == nil {
			doc, err = doc.WithShared(sharedDoc)
		}
		if err != nil {
			rep.add(Finding{Reason: ReasonPayloadInvalid, Blocking: true, Message: fmt.Sprintf(
				"shared payload Secret %s, key %s: %v (the sidecar keeps serving its last good document)", sharedName, payload.SharedKey, err)})
			return nil
		}
	}
	rep.Hash, rep.Dialects = doc.Hash, doc.Dialects
	spec, _ := dialectSpec(rep.Dialect)
	if !slices.ContainsFunc(spec.enabledBy, doc.Serves) {
		rep.add(Finding{Reason: ReasonDialectDisabled, Message: fmt.Sprintf(
			"MetadataService %s does not enable the %s dialect (spec.dialects); the payload enables %s", mds.Name, rep.Dialect, dialectList(doc.Dialects))})
		return nil
	}
	if rep.blockedForGood() {
		// Without a sidecar to come, showing files would suggest a guest
		// sees them.
		return nil
	}
	files, err := Render(ctx, raw, rep.Dialect, sharedRaw)
	if err != nil {
		return fmt.Errorf("rendering payload Secret %s/%s: %w", vmi.Namespace, name, err)
	}
	rep.Files = files
	return nil
}

// blockedForGood reports a blocking finding that a restart of the VM does not
// cure: only a missing sidecar is, and then the files are what the next
// launcher Pod serves.
func (r *Report) blockedForGood() bool {
	return slices.ContainsFunc(r.Findings, func(f Finding) bool {
		return f.Blocking && f.Reason != imdsv1alpha1.ReasonSidecarMissing
	})
}

func dialectList(ds []payload.Dialect) string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, string(d))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
