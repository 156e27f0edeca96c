package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

func TestStripCachedObject(t *testing.T) {
	doc := []byte(`{"apiVersion":"imds.kubevirt.io/v1alpha1","kind":"Payload","serve":{"interface":"default","bridge":"k6t-eth0"}}`)
	payloadSecret := func(annotations map[string]string, data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "vm-imds", Labels: map[string]string{imdsv1alpha1.LabelInstanceUID: "uid-1"},
				Annotations: annotations, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubevirt-imds"}}},
			Type: PayloadSecretType,
			Data: data,
		}
	}
	serve := map[string]string{imdsv1alpha1.AnnotationServe: serveAnnotation(payload.Serve{Interface: "default", Bridge: "k6t-eth0"})}
	tests := []struct {
		name      string
		in        *corev1.Secret
		stripped  bool
		wantServe payload.Serve
		wantWhy   string
		wantKnown bool
	}{{
		name:      "an instance's payload: its data becomes a digest, serve read from its annotation",
		in:        payloadSecret(serve, map[string][]byte{payload.SecretKey: doc}),
		stripped:  true,
		wantServe: payload.Serve{Interface: "default", Bridge: "k6t-eth0"},
		wantKnown: true,
	}, {
		name:     "written before the serve annotation: unknown from the cache",
		in:       payloadSecret(nil, map[string][]byte{payload.SecretKey: doc}),
		stripped: true,
	}, {
		name:      "no data",
		in:        payloadSecret(serve, nil),
		stripped:  true,
		wantWhy:   "the payload Secret holds no payload",
		wantKnown: true,
	}, {
		name: "a service's shared payload (no instance label) keeps its data",
		in: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mds-imds-shared"}, Type: PayloadSecretType,
			Data: map[string][]byte{payload.SecretKey: doc}},
		wantServe: payload.Serve{Interface: "default", Bridge: "k6t-eth0"},
		wantKnown: true,
	}, {
		name: "another type of Secret keeps its data",
		in: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{imdsv1alpha1.LabelInstanceUID: "uid-1"}},
			Data: map[string][]byte{payload.SecretKey: doc}},
		wantServe: payload.Serve{Interface: "default", Bridge: "k6t-eth0"},
		wantKnown: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.in.Data
			out, err := stripCachedObject(tt.in.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			s := out.(*corev1.Secret)
			if again, err := stripCachedObject(s.DeepCopy()); err != nil || !equality.Semantic.DeepEqual(again, s) {
				t.Errorf("a second transform changed the object (%v): %v", err, again)
			}
			if len(s.ManagedFields) != 0 {
				t.Errorf("managedFields kept: %v", s.ManagedFields)
			}
			if _, has := s.Annotations[cachedDataDigest]; has != tt.stripped {
				t.Errorf("digest annotation: %v, want %v", has, tt.stripped)
			}
			if tt.stripped && s.Data != nil {
				t.Errorf("data kept: %v", s.Data)
			}
			if !sameData(s, data) {
				t.Error("sameData(stripped, its own data) = false")
			}
			if sameData(s, map[string][]byte{payload.SecretKey: []byte("{}")}) {
				t.Error("sameData(stripped, other data) = true")
			}
			serve, why, known := PayloadServe(s)
			if serve != tt.wantServe || why != tt.wantWhy || known != tt.wantKnown {
				t.Errorf("PayloadServe = %+v, %q, %v; want %+v, %q, %v", serve, why, known, tt.wantServe, tt.wantWhy, tt.wantKnown)
			}
		})
	}
}

func TestDataDigestTellsMapsApart(t *testing.T) {
	a := dataDigest(map[string][]byte{"ab": []byte("c")})
	b := dataDigest(map[string][]byte{"a": []byte("bc")})
	c := dataDigest(map[string][]byte{"a": []byte("b"), "c": nil})
	if a == b || a == c || b == c {
		t.Errorf("digests collide: %s %s %s", a, b, c)
	}
	if dataDigest(nil) != dataDigest(map[string][]byte{}) {
		t.Error("nil and empty data differ")
	}
}
