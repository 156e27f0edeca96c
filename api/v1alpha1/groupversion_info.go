// Package v1alpha1 contains the API of kubevirt-imds: the MetadataService
// resource in the imds.kubevirt.io group.
// +kubebuilder:object:generate=true
// +groupName=imds.kubevirt.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of MetadataService.
	GroupVersion = schema.GroupVersion{Group: "imds.kubevirt.io", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this group-version to a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
