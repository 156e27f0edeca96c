package controllers

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	kubevirtv1 "kubevirt.io/api/core/v1"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// NewScheme registers the API types the operator's controllers and webhooks
// read and write: Kubernetes' own, imds.kubevirt.io and kubevirt.io.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, imdsv1alpha1.AddToScheme, kubevirtv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}
