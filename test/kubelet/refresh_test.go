package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestTokenRefreshLoop drives Run's timer with tokens whose lifetimes the
// fake API server chooses: envtest refuses expirations under 600 s, and a
// real refresh would take 8 minutes. The first token is due at once; its
// replacement is not.
func TestTokenRefreshLoop(t *testing.T) {
	cs := fake.NewClientset()
	var mu sync.Mutex
	var requests []*authenticationv1.TokenRequest
	cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		req := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenRequest)
		mu.Lock()
		defer mu.Unlock()
		requests = append(requests, req)
		// The first token has 20% of its 600 s left: due now.
		expiry := time.Now().Add(120 * time.Second)
		if len(requests) > 1 {
			expiry = time.Now().Add(600 * time.Second)
		}
		out := req.DeepCopy()
		out.Status = authenticationv1.TokenRequestStatus{
			Token:               "token-" + string(rune('0'+len(requests))),
			ExpirationTimestamp: metav1.NewTime(expiry),
		}
		return true, out, nil
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(requests)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid-1"},
		Spec: corev1.PodSpec{
			ServiceAccountName: "sa",
			Volumes: []corev1.Volume{{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: "vault", ExpirationSeconds: new(int64(600)), Path: "token",
				}}},
			}}}},
			Containers: []corev1.Container{{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "tok", MountPath: "/tok"}}}},
		},
	}
	kl := New(Config{Client: cs, Root: t.TempDir(), Log: testr.New(t)})
	ctx, cancel := context.WithCancel(context.Background())
	vols, err := kl.MountVolumes(ctx, pod, "c")
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(vols["/tok"], "token")
	if b, _ := os.ReadFile(tokenFile); string(b) != "token-1" {
		t.Fatalf("first token %q", b)
	}
	done := make(chan error, 1)
	go func() { done <- kl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	g := NewWithT(t)
	g.Eventually(func() (string, error) {
		b, err := os.ReadFile(tokenFile)
		return string(b), err
	}).WithTimeout(10*time.Second).Should(Equal("token-2"), "the due token was not replaced")
	// The replacement is good for 8 minutes: no further request.
	g.Consistently(count).WithTimeout(300 * time.Millisecond).Should(Equal(2))
	mu.Lock()
	defer mu.Unlock()
	for _, r := range requests {
		if len(r.Spec.Audiences) != 1 || r.Spec.Audiences[0] != "vault" || *r.Spec.ExpirationSeconds != 600 {
			t.Errorf("token request spec %+v", r.Spec)
		}
		if b := r.Spec.BoundObjectRef; b == nil || b.Kind != "Pod" || b.Name != "p" || b.UID != "uid-1" {
			t.Errorf("token bound to %+v, want the Pod", b)
		}
	}
}
