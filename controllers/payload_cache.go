package controllers

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// cachedDataDigest is the annotation that the manager's cache puts on an
// instance's payload Secret in place of its data: the digest of that data
// (dataDigest). The API server never sees it: the data of 10,000 instances
// is the largest thing the cache would otherwise hold, and the controller
// only compares it, while the Pod webhook needs only where the sidecar
// serves (AnnotationServe).
const cachedDataDigest = "cache.imds.kubevirt.io/data-sha256"

// stripCachedObject is the manager cache's transform: every object loses its
// managedFields, and an instance's payload Secret its data, replaced by its
// digest. It is idempotent, as client-go requires: an informer's streaming
// list transforms the objects it lists once into its own store and again as
// it hands them to the cache, and a digest taken then of the data already
// taken away would be the empty data's.
func stripCachedObject(in any) (any, error) {
	if m, err := meta.Accessor(in); err == nil {
		m.SetManagedFields(nil)
	}
	s, ok := in.(*corev1.Secret)
	if !ok || s.Type != PayloadSecretType || s.Labels[imdsv1alpha1.LabelInstanceUID] == "" {
		return in, nil
	}
	if _, stripped := s.Annotations[cachedDataDigest]; stripped && s.Data == nil {
		return s, nil
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[cachedDataDigest] = dataDigest(s.Data)
	s.Data = nil
	return s, nil
}

// dataDigest is the SHA-256 of a Secret's data, keys in order, each key and
// value prefixed by its length so that no two data maps share it.
func dataDigest(data map[string][]byte) string {
	h := sha256.New()
	var n [8]byte
	for _, k := range slices.Sorted(maps.Keys(data)) {
		binary.BigEndian.PutUint64(n[:], uint64(len(k)))
		h.Write(n[:])
		h.Write([]byte(k))
		binary.BigEndian.PutUint64(n[:], uint64(len(data[k])))
		h.Write(n[:])
		h.Write(data[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sameData reports whether have, as read from the cache or the API server,
// holds data.
func sameData(have *corev1.Secret, data map[string][]byte) bool {
	if digest, cached := have.Annotations[cachedDataDigest]; cached {
		return digest == dataDigest(data)
	}
	return equality.Semantic.DeepEqual(have.Data, data)
}

// serveAnnotation is the value of AnnotationServe for serve.
func serveAnnotation(serve payload.Serve) string {
	out, err := json.Marshal(serve)
	if err != nil {
		panic(err) // two strings always marshal
	}
	return string(out)
}

// PayloadServe returns where the payload in Secret s (a payload Secret, as
// the manager's cache or the API server has it) places the sidecar, and
// whether s holds a payload at all; why says why not. A Secret as the cache
// holds it has no data, and a payload Secret written before the operator
// recorded AnnotationServe is unknown from it: known is then false, and the
// caller reads the Secret from the API server.
func PayloadServe(s *corev1.Secret) (serve payload.Serve, why string, known bool) {
	if digest, cached := s.Annotations[cachedDataDigest]; cached {
		if digest == dataDigest(nil) {
			return serve, "the payload Secret holds no payload", true
		}
		v, ok := s.Annotations[imdsv1alpha1.AnnotationServe]
		if !ok {
			return serve, "", false
		}
		if err := json.Unmarshal([]byte(v), &serve); err != nil {
			return serve, fmt.Sprintf("the payload Secret's annotation %s is not valid: %v", imdsv1alpha1.AnnotationServe, err), true
		}
		return serve, "", true
	}
	if len(s.Data[payload.SecretKey]) == 0 {
		return serve, "the payload Secret holds no payload", true
	}
	// Decoded without Document's checks: fields a newer operator added are
	// ignored here, as the sidecar ignores them.
	var doc payload.Document
	if err := json.Unmarshal(s.Data[payload.SecretKey], &doc); err != nil {
		return serve, fmt.Sprintf("the payload Secret holds no valid document: %v", err), true
	}
	return doc.Serve, "", true
}
