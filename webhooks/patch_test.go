package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// The webhooks build their patches from what Default added (patch.go); the
// object the API server gets by applying them must be the one Default makes.
// Each case admits the object twice, as the API server may (reinvocation):
// the second pass must patch nothing.

func TestPodPatchIsWhatDefaultAdds(t *testing.T) {
	const ns = "patch"
	s, err := controllers.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	tokens := &imdsv1alpha1.IdentitySpec{ServiceAccountTokens: []imdsv1alpha1.ServiceAccountTokenSpec{
		{Audience: "vault", ExpirationSeconds: 7200}, {Audience: "sts.example.com"}}}
	objs := []client.Object{
		fixtures.MetadataService(ns, "tokens", imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "tokens"}}, Identity: tokens}),
		fixtures.MetadataService(ns, "plain", imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "plain"}}}),
	}
	type podCase struct {
		name string
		pod  *corev1.Pod
	}
	var cases []podCase
	for i, c := range []struct {
		name, app string
		edit      func(*kubevirtv1.VirtualMachineInstance, *corev1.Pod)
	}{
		{"token volumes and the default ServiceAccount", "tokens", nil},
		{"no token", "plain", nil},
		{"a named ServiceAccount", "tokens", func(_ *kubevirtv1.VirtualMachineInstance, p *corev1.Pod) { p.Spec.ServiceAccountName = "vm-sa" }},
		{"a Guaranteed Pod", "plain", func(v *kubevirtv1.VirtualMachineInstance, p *corev1.Pod) {
			*p = *fixtures.LauncherPod(fixtures.DedicatedCPUs(v, 2))
		}},
		{"no volumes and no init containers", "tokens", func(_ *kubevirtv1.VirtualMachineInstance, p *corev1.Pod) {
			p.Spec.Volumes, p.Spec.InitContainers = nil, nil
		}},
		{"not served", "other", nil},
	} {
		vmi := fixtures.VMI(ns, fmt.Sprintf("vm-%d", i), map[string]string{"app": c.app})
		vmi.UID = types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
		pod := fixtures.LauncherPod(vmi)
		if c.edit != nil {
			c.edit(vmi, pod)
		}
		objs = append(objs, vmi, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: imdsv1alpha1.PayloadSecretName(vmi.Name),
				Labels: map[string]string{imdsv1alpha1.LabelInstanceUID: string(vmi.UID)}},
			Type: controllers.PayloadSecretType,
			Data: map[string][]byte{payload.SecretKey: []byte(`{"serve":{"bridge":"k6t-eth0"}}`)},
		})
		cases = append(cases, podCase{c.name, pod})
	}
	injector := &webhooks.PodInjector{Reader: fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build(),
		Sidecar: webhooks.SidecarOptions{Image: "kubevirt-imds:patch"}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			want := c.pod.DeepCopy()
			req := admissionRequest(t, ns, "Pod", c.pod)
			if err := injector.Default(admission.NewContextWithRequest(ctx, req), want); err != nil {
				t.Fatal(err)
			}
			got := &corev1.Pod{}
			raw := applyResponse(t, req.Object.Raw, injector.Handle(ctx, req), got)
			if !equality.Semantic.DeepEqual(got, want) {
				t.Fatalf("patched Pod differs from the defaulted one:\n got %s\nwant %s", mustJSON(t, got), mustJSON(t, want))
			}
			if controllers.HasSidecar(want) == equality.Semantic.DeepEqual(c.pod, want) {
				t.Fatalf("the case does not test what it says: sidecar %v", controllers.HasSidecar(want))
			}
			req.Object.Raw = raw
			if resp := injector.Handle(ctx, req); len(resp.Patches) != 0 || resp.PatchType != nil || !resp.Allowed {
				t.Fatalf("second pass: %+v", resp)
			}
		})
	}
}

func TestVMIPatchIsWhatDefaultAdds(t *testing.T) {
	const ns = "patch"
	s, err := controllers.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	reader := fake.NewClientBuilder().WithScheme(s).WithObjects(
		fixtures.MetadataService(ns, "nocloud", imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "nocloud"}}}),
		fixtures.MetadataService(ns, "openstack", imdsv1alpha1.MetadataServiceSpec{
			Selector:       metav1.LabelSelector{MatchLabels: map[string]string{"app": "openstack"}},
			GuestDiscovery: imdsv1alpha1.GuestDiscoveryOpenStack}),
	).Build()
	defaulter := &webhooks.DiscoveryDefaulter{Reader: reader}
	for _, c := range []struct {
		name, app string
		unchanged bool
		edit      func(*kubevirtv1.VirtualMachineInstance)
	}{
		{"NoCloud without firmware", "nocloud", false, nil},
		{"NoCloud with firmware", "nocloud", false, func(v *kubevirtv1.VirtualMachineInstance) {
			v.Spec.Domain.Firmware = &kubevirtv1.Firmware{UUID: "5d307ca9-b3ef-428c-8861-06e72d69f223"}
		}},
		{"OpenStack without chassis", "openstack", false, nil},
		{"OpenStack with chassis", "openstack", false, func(v *kubevirtv1.VirtualMachineInstance) {
			v.Spec.Domain.Chassis = &kubevirtv1.Chassis{Manufacturer: "example"}
		}},
		{"the VMI's own value", "nocloud", true, func(v *kubevirtv1.VirtualMachineInstance) {
			v.Spec.Domain.Firmware = &kubevirtv1.Firmware{Serial: "mine"}
		}},
		{"not served", "other", true, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			vmi := fixtures.VMI(ns, "vm", map[string]string{"app": c.app})
			if c.edit != nil {
				c.edit(vmi)
			}
			want := vmi.DeepCopy()
			req := admissionRequest(t, ns, "VirtualMachineInstance", vmi)
			if err := defaulter.Default(admission.NewContextWithRequest(ctx, req), want); err != nil {
				t.Fatal(err)
			}
			got := &kubevirtv1.VirtualMachineInstance{}
			raw := applyResponse(t, req.Object.Raw, defaulter.Handle(ctx, req), got)
			if !equality.Semantic.DeepEqual(got, want) {
				t.Fatalf("patched VMI differs from the defaulted one:\n got %s\nwant %s", mustJSON(t, got), mustJSON(t, want))
			}
			if equality.Semantic.DeepEqual(vmi, want) != c.unchanged {
				t.Fatalf("the case does not test what it says: unchanged %v", !c.unchanged)
			}
			req.Object.Raw = raw
			if resp := defaulter.Handle(ctx, req); len(resp.Patches) != 0 || !resp.Allowed {
				t.Fatalf("second pass: %+v", resp)
			}
		})
	}
}

func TestUndecodableObjectIsAdmittedUnchanged(t *testing.T) {
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Namespace: "x", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Object: runtime.RawExtension{Raw: []byte(`{"spec":{"volumes":"not a list"}}`)},
	}}
	if resp := (&webhooks.PodInjector{}).Handle(context.Background(), req); !resp.Allowed || len(resp.Patches) != 0 {
		t.Fatalf("Pod: %+v", resp)
	}
	if resp := (&webhooks.DiscoveryDefaulter{}).Handle(context.Background(), req); !resp.Allowed || len(resp.Patches) != 0 {
		t.Fatalf("VMI: %+v", resp)
	}
}

// admissionRequest is the CREATE of obj as the API server sends it.
func admissionRequest(t *testing.T, namespace, kind string, obj any) admission.Request {
	t.Helper()
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "req", Operation: admissionv1.Create, Namespace: namespace,
		Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind}, Object: runtime.RawExtension{Raw: mustJSON(t, obj)},
	}}
}

// applyResponse applies resp's patch to raw, as the API server does,
// decodes the result into into and returns it.
func applyResponse(t *testing.T, raw []byte, resp admission.Response, into any) []byte {
	t.Helper()
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp.Result)
	}
	if len(resp.Patches) > 0 {
		p, err := jsonpatch.DecodePatch(mustJSON(t, resp.Patches))
		if err != nil {
			t.Fatal(err)
		}
		if raw, err = p.Apply(raw); err != nil {
			t.Fatalf("applying %s: %v", mustJSON(t, resp.Patches), err)
		}
	}
	if err := json.Unmarshal(raw, into); err != nil {
		t.Fatal(err)
	}
	return raw
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
