package kubelet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// maxTokenTTL is the longest kubelet keeps a token before replacing it,
	// whatever its expiry.
	maxTokenTTL = 24 * time.Hour
	// maxRefreshJitter spreads refreshes, as kubelet's token manager does.
	maxRefreshJitter = 10 * time.Second
	// defaultTokenExpiration is the API's default for a projection.
	defaultTokenExpiration = int64(3600)
)

// RefreshAt returns when kubelet's token manager replaces a token that
// expires at expiry and was requested with expirationSeconds: once 80% of
// its lifetime has passed, or 24 hours after issue, whichever comes first,
// each brought forward by jitter. Like kubelet, it takes the issue time to be
// expiry minus the requested lifetime, even when the API server extended the
// token.
func RefreshAt(expiry time.Time, expirationSeconds int64, jitter time.Duration) time.Time {
	ttl := time.Duration(expirationSeconds) * time.Second
	issued := expiry.Add(-ttl)
	byAge := issued.Add(maxTokenTTL - jitter)
	// Kubelet computes the 20% in whole seconds.
	byExpiry := expiry.Add(-time.Duration(expirationSeconds*20/100)*time.Second - jitter)
	if byAge.Before(byExpiry) {
		return byAge
	}
	return byExpiry
}

// token is the current token of one serviceAccountToken projection.
type token struct {
	value     []byte
	expiry    time.Time
	refreshAt time.Time
}

// requestToken asks the TokenRequest API for a token of the Pod's
// ServiceAccount, bound to the Pod, as kubelet does for a projection.
func (k *Kubelet) requestToken(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (*token, error) {
	exp := defaultTokenExpiration
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	var audiences []string
	if src.Audience != "" {
		audiences = []string{src.Audience}
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         audiences,
		ExpirationSeconds: &exp,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
		},
	}}
	sa := serviceAccountName(pod)
	out, err := k.cfg.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token of ServiceAccount %s/%s for audience %q: %w", pod.Namespace, sa, src.Audience, err)
	}
	expiry := out.Status.ExpirationTimestamp.Time
	if out.Spec.ExpirationSeconds != nil {
		exp = *out.Spec.ExpirationSeconds
	}
	jitter := time.Duration(rand.Int64N(int64(maxRefreshJitter)))
	return &token{value: []byte(out.Status.Token), expiry: expiry, refreshAt: RefreshAt(expiry, exp, jitter)}, nil
}

// serviceAccountName is the Pod's ServiceAccount; without the ServiceAccount
// admission plugin (envtest) nothing defaults it, so do it here.
func serviceAccountName(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}
