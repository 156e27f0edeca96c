package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

func TestInstancesConfiguredCondition(t *testing.T) {
	hpc := imdsv1alpha1.UnservableInstance{Name: "hpc", Reason: imdsv1alpha1.ReasonNoPodNetwork}
	passt := imdsv1alpha1.UnservableInstance{Name: "fast", Reason: imdsv1alpha1.ReasonUnsupportedBinding}
	for _, tc := range []struct {
		name                  string
		missing, undiscovered []string
		unservable            []imdsv1alpha1.UnservableInstance
		status                metav1.ConditionStatus
		reason                string
		contains              []string
	}{
		{"all well", nil, nil, nil, metav1.ConditionTrue, imdsv1alpha1.ReasonInstancesConfigured, nil},
		{"sidecar missing", []string{"b", "a"}, nil, nil, metav1.ConditionFalse, imdsv1alpha1.ReasonSidecarMissing, []string{"2 instances", "a, b"}},
		{"discovery only", nil, []string{"c"}, nil, metav1.ConditionFalse, imdsv1alpha1.ReasonGuestDiscoveryNotApplied, []string{"NoCloud", "c"}},
		{"sidecar outranks discovery", []string{"a"}, []string{"c"}, nil, metav1.ConditionFalse, imdsv1alpha1.ReasonSidecarMissing, []string{"a", "; 1 instances lack"}},
		{"long lists are cut", []string{"a", "b", "c", "d", "e", "f", "g"}, nil, nil, metav1.ConditionFalse, imdsv1alpha1.ReasonSidecarMissing, []string{"a, b, c, d, e and 2 more"}},
		{"unservable: the first one's reason", nil, nil, []imdsv1alpha1.UnservableInstance{hpc, passt}, metav1.ConditionFalse, imdsv1alpha1.ReasonUnsupportedBinding,
			[]string{"2 instances cannot be served", "fast (UnsupportedBinding), hpc (NoServableInterface)"}},
		{"sidecar missing outranks unservable", []string{"a"}, nil, []imdsv1alpha1.UnservableInstance{hpc}, metav1.ConditionFalse, imdsv1alpha1.ReasonSidecarMissing,
			[]string{"1 instances run without", "hpc (NoServableInterface)"}},
		{"unservable outranks discovery", nil, []string{"c"}, []imdsv1alpha1.UnservableInstance{hpc}, metav1.ConditionFalse, imdsv1alpha1.ReasonNoPodNetwork,
			[]string{"hpc", "1 instances lack the NoCloud"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := instancesConfiguredCondition(&inspection{Mode: imdsv1alpha1.GuestDiscoveryNoCloud, Missing: tc.missing, Undiscovered: tc.undiscovered, Unservable: tc.unservable})
			if c.Type != imdsv1alpha1.ConditionInstancesConfigured || c.Status != tc.status || c.Reason != tc.reason {
				t.Fatalf("got %+v", c)
			}
			for _, s := range tc.contains {
				if !strings.Contains(c.Message, s) {
					t.Errorf("message %q lacks %q", c.Message, s)
				}
			}
		})
	}
}

func TestDiscoveryValue(t *testing.T) {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if want, have, ok := DiscoveryValue(imdsv1alpha1.GuestDiscoveryNoCloud, vmi); !ok || want != NoCloudSerial || have != "" {
		t.Errorf("NoCloud on a bare VMI: %q %q %v", want, have, ok)
	}
	vmi.Spec.Domain.Chassis = &kubevirtv1.Chassis{Asset: "mine"}
	if want, have, ok := DiscoveryValue(imdsv1alpha1.GuestDiscoveryOpenStack, vmi); !ok || want != OpenStackAssetTag || have != "mine" {
		t.Errorf("OpenStack with a user asset tag: %q %q %v", want, have, ok)
	}
	vmi.Spec.Domain.Firmware = &kubevirtv1.Firmware{UUID: "5A1F2C3E-0b1d-4e5f-9a8b-7c6d5e4f3a2b", Serial: "mine"}
	if want, have, ok := DiscoveryValue(imdsv1alpha1.GuestDiscoveryEC2, vmi); !ok || want != "ec2f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b" || have != "mine" {
		t.Errorf("EC2 with a user serial: %q %q %v", want, have, ok)
	}
	vmi.Spec.Domain.Firmware = nil
	if _, _, ok := DiscoveryValue(imdsv1alpha1.GuestDiscoveryNone, vmi); ok {
		t.Error("None applies")
	}
	if GuestDiscoveryOf(&imdsv1alpha1.MetadataService{}) != imdsv1alpha1.GuestDiscoveryNoCloud {
		t.Error("the default mode is not NoCloud")
	}
}

// TestEC2UUID: the UUID starts with ec2, is stable, and is left alone once
// it does.
func TestEC2UUID(t *testing.T) {
	for _, tt := range []struct{ uuid, want string }{
		{"5a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b", "ec2f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b"},
		{"EC2F2C3E-0B1D-4E5F-9A8B-7C6D5E4F3A2B", "ec2f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b"},
		{"ec2f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b", "ec2f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b"},
	} {
		vmi := &kubevirtv1.VirtualMachineInstance{}
		vmi.Spec.Domain.Firmware = &kubevirtv1.Firmware{UUID: types.UID(tt.uuid)}
		if got := EC2UUID(vmi); got != tt.want {
			t.Errorf("EC2UUID(%s) = %s, want %s", tt.uuid, got, tt.want)
		}
	}
	a := &kubevirtv1.VirtualMachineInstance{}
	a.Namespace, a.Name = "tenant-a", "vm1"
	got := EC2UUID(a)
	if !strings.HasPrefix(got, "ec2") || got != EC2UUID(a.DeepCopy()) || len(got) != 36 {
		t.Errorf("a VMI without a UUID gets %q", got)
	}
}

func TestHasSidecar(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "compute"}}}}
	if HasSidecar(pod) {
		t.Error("a bare launcher Pod has the sidecar")
	}
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: SidecarContainerName})
	if !HasSidecar(pod) {
		t.Error("the native sidecar is not found")
	}
}

func TestServingMetadataServiceAgreesWithTheController(t *testing.T) {
	low := imdsv1alpha1.MetadataService{ObjectMeta: metav1.ObjectMeta{Name: "low", UID: "1"}}
	high := imdsv1alpha1.MetadataService{ObjectMeta: metav1.ObjectMeta{Name: "high", UID: "2"},
		Spec: imdsv1alpha1.MetadataServiceSpec{Priority: 10, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	services := []imdsv1alpha1.MetadataService{low, high}
	if got := ServingMetadataService(services, map[string]string{"app": "web"}); got == nil || got.Name != "high" {
		t.Errorf("web: %v", got)
	}
	if got := ServingMetadataService(services, nil); got == nil || got.Name != "low" {
		t.Errorf("unlabelled: %v", got)
	}
	if got := ServingMetadataService(nil, nil); got != nil {
		t.Errorf("no services: %v", got)
	}
}
