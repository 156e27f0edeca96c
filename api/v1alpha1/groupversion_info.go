// Package v1alpha1 contains the API of kubevirt-imds: the MetadataService
// resource in the imds.kubevirt.io group.
// +kubebuilder:object:generate=true
// +groupName=imds.kubevirt.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of MetadataService.
	GroupVersion = schema.GroupVersion{Group: "imds.kubevirt.io", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this group-version to a scheme. It is
	// apimachinery's, so that importing the API brings no controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &MetadataService{}, &MetadataServiceList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
