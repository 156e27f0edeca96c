package webhooks_test

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// A cache that has not yet seen what was created just before the object
// admitted (a MetadataService applied with its VMs; the VMI virt-controller
// saw first) must not cost the VM its discovery data or its sidecar: the
// webhooks ask the API server on a miss. Here the cache is an empty reader
// and the API server one that has everything.
func TestStaleCacheFallsBackToTheAPIServer(t *testing.T) {
	s, err := controllers.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ns = "apply"
	mds := fixtures.MetadataService(ns, "web", imdsv1alpha1.MetadataServiceSpec{})
	vmi := fixtures.VMI(ns, "vm1", nil)
	vmi.UID = types.UID("4c1f5a52-9f1e-4e8e-8f0a-0c2d6d3b9a10")
	secret := payloadSecretFor(vmi, nil)
	stale := fake.NewClientBuilder().WithScheme(s).Build()
	live := fake.NewClientBuilder().WithScheme(s).WithObjects(mds, vmi.DeepCopy(), secret).Build()

	t.Run("VMI", func(t *testing.T) {
		v := fixtures.VMI(ns, "vm2", nil)
		if err := (&webhooks.DiscoveryDefaulter{Reader: stale, Live: live}).Default(ctx, v); err != nil {
			t.Fatal(err)
		}
		if v.Spec.Domain.Firmware == nil || v.Spec.Domain.Firmware.Serial != controllers.NoCloudSerial {
			t.Errorf("no NoCloud serial: %+v", v.Spec.Domain.Firmware)
		}
	})
	t.Run("Pod", func(t *testing.T) {
		pod := fixtures.LauncherPod(vmi)
		if err := (&webhooks.PodInjector{Reader: stale, Live: live, Sidecar: webhooks.SidecarOptions{Image: "x"}}).Default(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if !controllers.HasSidecar(pod) {
			t.Fatal("no sidecar")
		}
		expectServesBridge(t, pod, "k6t-eth0")
	})
	t.Run("without the API server, the stale cache selects nothing", func(t *testing.T) {
		v := fixtures.VMI(ns, "vm3", nil)
		if err := (&webhooks.DiscoveryDefaulter{Reader: stale}).Default(ctx, v); err != nil {
			t.Fatal(err)
		}
		if v.Spec.Domain.Firmware != nil {
			t.Errorf("serial set from nowhere: %+v", v.Spec.Domain.Firmware)
		}
	})
}

// The manager's cache holds instances' payload Secrets without their data
// (controllers.CacheOptions): the Pod webhook places the sidecar from the
// Secret's serve annotation, and reads a Secret written before the
// annotation existed (by an older operator) from the API server.
func TestSidecarPlacedFromTheCachedPayloadSecret(t *testing.T) {
	s, err := controllers.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ns = "cached"
	mds := fixtures.MetadataService(ns, "web", imdsv1alpha1.MetadataServiceSpec{})
	vmi := fixtures.VMI(ns, "vm1", nil)
	vmi.UID = types.UID("0b8c3f4e-2f57-4c11-9d0e-5b7f3a1c2d40")
	cached := func(s *corev1.Secret) *corev1.Secret {
		out, err := controllers.CacheOptions().DefaultTransform(s.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		if c := out.(*corev1.Secret); len(c.Data) != 0 {
			t.Fatalf("the cache keeps the payload's data: %v", c.Data)
		}
		return out.(*corev1.Secret)
	}
	withServe := payloadSecretFor(vmi, map[string]string{imdsv1alpha1.AnnotationServe: `{"interface":"default","bridge":"k6t-eth0"}`})
	older := payloadSecretFor(vmi, nil)
	tests := []struct {
		name        string
		cache, live []client.Object
		wantSidecar bool
	}{
		{"the serve annotation, no API server read", []client.Object{cached(withServe)}, nil, true},
		{"written by an older operator, read from the API server", []client.Object{cached(older)}, []client.Object{older}, true},
		{"written by an older operator, and not on the API server", []client.Object{cached(older)}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reader := fake.NewClientBuilder().WithScheme(s).WithObjects(append(tt.cache, mds.DeepCopy(), vmi.DeepCopy())...).Build()
			live := fake.NewClientBuilder().WithScheme(s).WithObjects(tt.live...).Build()
			pod := fixtures.LauncherPod(vmi)
			if err := (&webhooks.PodInjector{Reader: reader, Live: live, Sidecar: webhooks.SidecarOptions{Image: "x"}}).Default(ctx, pod); err != nil {
				t.Fatal(err)
			}
			if got := controllers.HasSidecar(pod); got != tt.wantSidecar {
				t.Fatalf("sidecar injected: %v, want %v", got, tt.wantSidecar)
			}
			if !tt.wantSidecar {
				return
			}
			expectServesBridge(t, pod, "k6t-eth0")
		})
	}
}

// payloadSecretFor is vmi's payload Secret as the operator writes it, serving
// on bridge k6t-eth0, with annotations.
func payloadSecretFor(vmi *kubevirtv1.VirtualMachineInstance, annotations map[string]string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: vmi.Namespace, Name: imdsv1alpha1.PayloadSecretName(vmi.Name),
			Labels:      map[string]string{imdsv1alpha1.LabelInstanceUID: string(vmi.UID)},
			Annotations: annotations},
		Type: controllers.PayloadSecretType,
		Data: map[string][]byte{payload.SecretKey: []byte(`{"serve":{"interface":"default","bridge":"k6t-eth0"}}`)},
	}
}

// expectServesBridge fails t unless the sidecar injected into pod serves on
// bridge.
func expectServesBridge(t *testing.T, pod *corev1.Pod, bridge string) {
	t.Helper()
	args := pod.Spec.InitContainers[len(pod.Spec.InitContainers)-1].Args
	if !slices.Contains(args, "--bridge="+bridge) {
		t.Errorf("the sidecar does not serve the payload's bridge: %q", args)
	}
}
