package controllers

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/instanceidentity"
)

const (
	// IdentitySecretName is the Secret, in the operator's namespace, that
	// keeps the identity signing key.
	IdentitySecretName = "kubevirt-imds-identity-signing"
	// IdentityConfigMapName is the ConfigMap, in the operator's namespace,
	// that publishes the certificates verifying identity documents.
	IdentityConfigMapName = "kubevirt-imds-identity-certificates"
	// IdentityCertificatesKey is the ConfigMap key holding every published
	// certificate (PEM, the current key's first).
	IdentityCertificatesKey = "certificates.pem"
	// IdentityCurrentKey is the ConfigMap key holding the current key's
	// certificate alone.
	IdentityCurrentKey = "current.pem"

	// DefaultIdentityKeyRotation is how long a signing key signs before a
	// new one replaces it.
	DefaultIdentityKeyRotation = 90 * 24 * time.Hour
	// DefaultIdentityKeyOverlap is how long a replaced key's certificate
	// stays published and valid after the replacement: documents it signed
	// verify that long (guests fetch the re-signed document at once, but a
	// verifier may be handed an old copy).
	DefaultIdentityKeyOverlap = 30 * 24 * time.Hour

	secretKeyPEM      = "tls.key"
	secretCertPEM     = "tls.crt"
	secretPreviousPEM = "previous.crt"
)

// IdentityKeys keeps the identity signing key: it creates the key's Secret,
// replaces the key after Rotation, keeps replaced certificates published for
// Overlap after the replacement (each certificate is valid for Rotation +
// Overlap), and publishes the certificates in a ConfigMap. It is safe for
// concurrent use.
type IdentityKeys struct {
	// Client reads and writes the Secret and the ConfigMap.
	Client client.Client
	// Namespace is the operator's namespace.
	Namespace string
	// Rotation and Overlap default to DefaultIdentityKeyRotation and
	// DefaultIdentityKeyOverlap.
	Rotation, Overlap time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// Live reads from the API server the Secret the cache misses because it
	// lacks the operator's label (written by an earlier release); nil
	// trusts the cache.
	Live client.Reader

	mu       sync.Mutex
	cached   *keyring
	cachedRV string
	// written is the keyring this process last wrote: the cache may not
	// show it yet, and must not make it create or replace a key twice.
	written *keyring
}

// keyring is the current key and every certificate to publish.
type keyring struct {
	current *instanceidentity.Key
	// published are the current certificate and the unexpired replaced
	// ones, newest first.
	published []*x509.Certificate
	// rotateAt is when the current key is due for replacement.
	rotateAt time.Time
}

// PEMs are the published certificates, PEM encoded.
func (k *keyring) PEMs() []string {
	out := make([]string, 0, len(k.published))
	for _, c := range k.published {
		out = append(out, string(instanceidentity.CertPEM(c)))
	}
	return out
}

func (k *IdentityKeys) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

func (k *IdentityKeys) rotation() time.Duration {
	if k.Rotation > 0 {
		return k.Rotation
	}
	return DefaultIdentityKeyRotation
}

func (k *IdentityKeys) overlap() time.Duration {
	if k.Overlap > 0 {
		return k.Overlap
	}
	return DefaultIdentityKeyOverlap
}

func (k *IdentityKeys) key() types.NamespacedName {
	return types.NamespacedName{Namespace: k.Namespace, Name: IdentitySecretName}
}

// Current returns the keyring as the Secret has it, without writing; nil
// when there is no Secret yet. The Pod webhook renders with it.
func (k *IdentityKeys) Current(ctx context.Context) (*keyring, error) {
	var s corev1.Secret
	if err := k.getSecret(ctx, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading Secret %s: %w", k.key(), err)
	}
	return k.parse(&s)
}

// Ensure returns the keyring after creating the Secret when it is missing,
// replacing a key that is due and dropping expired certificates, and
// publishes the certificates in the ConfigMap.
func (k *IdentityKeys) Ensure(ctx context.Context) (*keyring, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var s corev1.Secret
	err := k.getSecret(ctx, &s)
	switch {
	case apierrors.IsNotFound(err) && k.written != nil:
		return k.written, nil
	case apierrors.IsNotFound(err):
		ring, err := k.create(ctx)
		if err != nil {
			return nil, err
		}
		return ring, k.publish(ctx, ring)
	case err != nil:
		return nil, fmt.Errorf("reading Secret %s: %w", k.key(), err)
	}
	ring, err := k.parse(&s)
	if err != nil {
		return nil, err
	}
	if w := k.written; w != nil && w.current.Cert.NotBefore.After(ring.current.Cert.NotBefore) {
		// The cache is behind this process's own write.
		return w, nil
	}
	now := k.now()
	stale := len(ring.published) > 1 && now.After(ring.published[len(ring.published)-1].NotAfter)
	if !now.Before(ring.rotateAt) || stale {
		if ring, err = k.rotate(ctx, &s, ring, !now.Before(ring.rotateAt)); err != nil {
			return nil, err
		}
	}
	return ring, k.publish(ctx, ring)
}

// getSecret reads the key's Secret from the cache, which holds only objects
// with the operator's label (CacheOptions). One written by an earlier
// release, unlabelled, is read from Live and labelled, so that the cache
// holds it from then on.
func (k *IdentityKeys) getSecret(ctx context.Context, s *corev1.Secret) error {
	err := k.Client.Get(ctx, k.key(), s)
	if !apierrors.IsNotFound(err) || k.Live == nil {
		return err
	}
	if err := k.Live.Get(ctx, k.key(), s); err != nil {
		return err
	}
	if s.Labels[imdsv1alpha1.LabelManagedBy] == imdsv1alpha1.ManagedByValue {
		return nil // the cache is behind
	}
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels[imdsv1alpha1.LabelManagedBy] = imdsv1alpha1.ManagedByValue
	if err := k.Client.Update(ctx, s); err != nil {
		return fmt.Errorf("labelling Secret %s for the operator's cache: %w", k.key(), err)
	}
	return nil
}

// parse reads the Secret, reusing the last parse while its resourceVersion
// stays the same.
func (k *IdentityKeys) parse(s *corev1.Secret) (*keyring, error) {
	if k.cached != nil && k.cachedRV == s.ResourceVersion && s.ResourceVersion != "" {
		return k.cached, nil
	}
	key, err := instanceidentity.ParseKey(s.Data[secretKeyPEM], s.Data[secretCertPEM])
	if err != nil {
		return nil, fmt.Errorf("identity signing key in Secret %s: %w", k.key(), err)
	}
	prev, err := instanceidentity.ParseCertificates(s.Data[secretPreviousPEM])
	if err != nil {
		return nil, fmt.Errorf("identity signing key in Secret %s, key %s: %w", k.key(), secretPreviousPEM, err)
	}
	now := k.now()
	ring := &keyring{current: key, published: []*x509.Certificate{key.Cert}, rotateAt: key.Cert.NotBefore.Add(time.Minute + k.rotation())}
	for _, c := range prev {
		if now.Before(c.NotAfter) {
			ring.published = append(ring.published, c)
		}
	}
	k.cached, k.cachedRV = ring, s.ResourceVersion
	return ring, nil
}

func (k *IdentityKeys) secretData(key *instanceidentity.Key, previous []*x509.Certificate) (map[string][]byte, error) {
	keyPEM, err := key.KeyPEM()
	if err != nil {
		return nil, err
	}
	var prev bytes.Buffer
	for _, c := range previous {
		prev.Write(instanceidentity.CertPEM(c))
	}
	return map[string][]byte{secretKeyPEM: keyPEM, secretCertPEM: key.CertPEM(), secretPreviousPEM: prev.Bytes()}, nil
}

func (k *IdentityKeys) create(ctx context.Context) (*keyring, error) {
	key, err := instanceidentity.NewKey(k.now(), k.rotation()+k.overlap())
	if err != nil {
		return nil, err
	}
	data, err := k.secretData(key, nil)
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: IdentitySecretName, Namespace: k.Namespace,
			Labels: map[string]string{imdsv1alpha1.LabelManagedBy: imdsv1alpha1.ManagedByValue}},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
	if err := k.Client.Create(ctx, s); err != nil {
		// Another replica may have won: read what it wrote next time.
		return nil, fmt.Errorf("creating Secret %s: %w", k.key(), err)
	}
	log.FromContext(ctx).Info("created the identity signing key", "secret", k.key().String(), "certificateSHA256", instanceidentity.Fingerprint(key.Cert))
	ring, err := k.parse(s)
	k.written = ring
	return ring, err
}

// rotate replaces the current key when replace is set, and drops expired
// certificates.
func (k *IdentityKeys) rotate(ctx context.Context, s *corev1.Secret, ring *keyring, replace bool) (*keyring, error) {
	key := ring.current
	candidates := ring.published[1:]
	if replace {
		next, err := instanceidentity.NewKey(k.now(), k.rotation()+k.overlap())
		if err != nil {
			return nil, err
		}
		candidates = ring.published
		key = next
	}
	var previous []*x509.Certificate
	for _, c := range candidates {
		if k.now().Before(c.NotAfter) {
			previous = append(previous, c)
		}
	}
	data, err := k.secretData(key, previous)
	if err != nil {
		return nil, err
	}
	updated := s.DeepCopy()
	updated.Data = data
	if err := k.Client.Update(ctx, updated); err != nil {
		return nil, fmt.Errorf("updating Secret %s: %w", k.key(), err)
	}
	if replace {
		log.FromContext(ctx).Info("replaced the identity signing key", "secret", k.key().String(),
			"certificateSHA256", instanceidentity.Fingerprint(key.Cert), "previousValidUntil", ring.current.Cert.NotAfter)
	}
	next, err := k.parse(updated)
	if replace {
		k.written = next
	}
	return next, err
}

// publish writes the certificates to the ConfigMap when they differ.
func (k *IdentityKeys) publish(ctx context.Context, ring *keyring) error {
	var all bytes.Buffer
	for _, p := range ring.PEMs() {
		all.WriteString(p)
	}
	want := map[string]string{
		IdentityCertificatesKey: all.String(),
		IdentityCurrentKey:      string(ring.current.CertPEM()),
	}
	var cm corev1.ConfigMap
	key := types.NamespacedName{Namespace: k.Namespace, Name: IdentityConfigMapName}
	err := k.Client.Get(ctx, key, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: IdentityConfigMapName, Namespace: k.Namespace,
			Labels: map[string]string{imdsv1alpha1.LabelManagedBy: imdsv1alpha1.ManagedByValue}}, Data: want}
		if err := k.Client.Create(ctx, &cm); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating ConfigMap %s: %w", key, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading ConfigMap %s: %w", key, err)
	}
	if cm.Data[IdentityCertificatesKey] == want[IdentityCertificatesKey] && cm.Data[IdentityCurrentKey] == want[IdentityCurrentKey] {
		return nil
	}
	updated := cm.DeepCopy()
	updated.Data = want
	if err := k.Client.Update(ctx, updated); err != nil {
		return fmt.Errorf("updating ConfigMap %s: %w", key, err)
	}
	return nil
}
