package controllers

import (
	"context"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	labelselection "k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// SourceReader reads the Secrets and ConfigMaps that MetadataServices
// reference, holding in memory the content of those alone. A cluster may
// have tens of thousands of Secrets and ConfigMaps unrelated to any VM: the
// manager caches only their metadata (Metadata, stripped to what the source
// watches need), and fetches a referenced object from the API server once
// per resourceVersion (Live).
type SourceReader struct {
	// Metadata reads PartialObjectMetadata of Secrets and ConfigMaps from
	// the cache that the source watches use; nil reads every source live.
	Metadata client.Reader
	// Live reads from the API server.
	Live client.Reader

	mu   sync.Mutex
	held map[sourceKey]client.Object
}

type sourceKey struct {
	kind string
	types.NamespacedName
}

var (
	secretGVK    = corev1.SchemeGroupVersion.WithKind("Secret")
	configMapGVK = corev1.SchemeGroupVersion.WithKind("ConfigMap")
)

// Secret returns the Secret key. The object is shared: callers must not
// modify it.
func (s *SourceReader) Secret(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	o, err := s.get(ctx, secretGVK, key, &corev1.Secret{})
	if err != nil {
		return nil, err
	}
	return o.(*corev1.Secret), nil
}

// ConfigMap returns the ConfigMap key. The object is shared: callers must
// not modify it.
func (s *SourceReader) ConfigMap(ctx context.Context, key types.NamespacedName) (*corev1.ConfigMap, error) {
	o, err := s.get(ctx, configMapGVK, key, &corev1.ConfigMap{})
	if err != nil {
		return nil, err
	}
	return o.(*corev1.ConfigMap), nil
}

func (s *SourceReader) get(ctx context.Context, gvk schema.GroupVersionKind, key types.NamespacedName, into client.Object) (client.Object, error) {
	k := sourceKey{gvk.Kind, key}
	if s.Metadata != nil {
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(gvk)
		if err := s.Metadata.Get(ctx, key, meta); err == nil {
			s.mu.Lock()
			held := s.held[k]
			s.mu.Unlock()
			if held != nil && held.GetResourceVersion() == meta.ResourceVersion {
				return held, nil
			}
		}
		// Not in the cache yet (just created) or changed: ask the API server.
	}
	if err := s.Live.Get(ctx, key, into); err != nil {
		if apierrors.IsNotFound(err) {
			s.Forget(gvk.Kind, key)
		}
		return nil, err
	}
	if s.Metadata != nil {
		s.mu.Lock()
		if s.held == nil {
			s.held = map[sourceKey]client.Object{}
		}
		s.held[k] = into
		s.mu.Unlock()
	}
	return into, nil
}

// Forget drops the content held for the object kind ("Secret" or
// "ConfigMap") key: it was deleted, or no MetadataService references it any
// more.
func (s *SourceReader) Forget(kind string, key types.NamespacedName) {
	s.mu.Lock()
	delete(s.held, sourceKey{kind, key})
	s.mu.Unlock()
}

// Held is how many sources' content is held in memory.
func (s *SourceReader) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

// newSourceMetadataCluster returns the cluster whose cache watches the
// metadata of every Secret and ConfigMap, kept apart from the manager's
// cache (which holds only the operator's own Secrets and ConfigMaps, by
// label, and would apply that selector to these watches too). It leaves out
// the operator's own objects, which no MetadataService references: with one
// payload Secret per VMI they are as many as the VMIs. Each object is
// stripped to its name, namespace, UID, resourceVersion and labels:
// annotations such as kubectl's last-applied-configuration can carry a
// Secret's whole content.
func newSourceMetadataCluster(mgr manager.Manager) (cluster.Cluster, error) {
	return cluster.New(mgr.GetConfig(), func(o *cluster.Options) {
		o.Scheme = mgr.GetScheme()
		o.HTTPClient = mgr.GetHTTPClient()
		o.MapperProvider = func(*rest.Config, *http.Client) (meta.RESTMapper, error) { return mgr.GetRESTMapper(), nil }
		o.Cache.DefaultTransform = stripToIdentity
		o.Cache.DefaultLabelSelector = notOwnObjects
	})
}

// notOwnObjects selects the objects that OwnObjectsSelector does not, those
// without its label included.
var notOwnObjects = func() labels.Selector {
	req, err := labels.NewRequirement(imdsv1alpha1.LabelManagedBy, labelselection.NotEquals, []string{imdsv1alpha1.ManagedByValue})
	if err != nil {
		panic(err) // constant, valid
	}
	return labels.NewSelector().Add(*req)
}()

// stripToIdentity keeps of a cached object's metadata what the source
// watches and the SourceReader use.
func stripToIdentity(in any) (any, error) {
	m, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	m.ObjectMeta = metav1.ObjectMeta{
		Name:            m.Name,
		Namespace:       m.Namespace,
		UID:             m.UID,
		ResourceVersion: m.ResourceVersion,
		Labels:          m.Labels,
	}
	return m, nil
}
