package controllers

import (
	"context"
	"flag"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

var _ = Describe("MetadataService validation by the API server", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace(context.Background()) })

	secretRef := func(name, key string) *imdsv1alpha1.KeyReference {
		return &imdsv1alpha1.KeyReference{Name: name, Key: key}
	}
	tokens := func(ts ...imdsv1alpha1.ServiceAccountTokenSpec) *imdsv1alpha1.IdentitySpec {
		return &imdsv1alpha1.IdentitySpec{ServiceAccountTokens: ts}
	}

	DescribeTable("rejects an invalid MetadataService at creation, naming the field",
		func(name string, spec imdsv1alpha1.MetadataServiceSpec, field, message string) {
			err := k8sClient.Create(context.Background(), newMDS(ns, name, spec))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(field))
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("user-data with two sources", "a", imdsv1alpha1.MetadataServiceSpec{
			UserData: &imdsv1alpha1.DataSource{Inline: ptr("#!/bin/sh"), SecretRef: secretRef("s", "k")}},
			"spec.userData", "exactly one of inline, secretRef and configMapRef"),
		Entry("vendor-data with no source", "a", imdsv1alpha1.MetadataServiceSpec{VendorData: &imdsv1alpha1.DataSource{}},
			"spec.vendorData", "exactly one of inline, secretRef and configMapRef"),
		Entry("inline user-data over 64 KiB", "a", imdsv1alpha1.MetadataServiceSpec{
			UserData: &imdsv1alpha1.DataSource{Inline: ptr("#!/bin/sh\n" + strings.Repeat("#", 65536))}},
			"spec.userData.inline", "Too long"),
		Entry("a Secret name that is not a DNS subdomain", "a", imdsv1alpha1.MetadataServiceSpec{
			UserData: &imdsv1alpha1.DataSource{SecretRef: secretRef("Bad_Name", "k")}},
			"spec.userData.secretRef.name", "should match"),
		Entry("a key with a slash", "a", imdsv1alpha1.MetadataServiceSpec{
			VendorData: &imdsv1alpha1.DataSource{ConfigMapRef: secretRef("cm", "a/b")}},
			"spec.vendorData.configMapRef.key", "should match"),
		Entry("token expiry under 10 minutes", "a", imdsv1alpha1.MetadataServiceSpec{
			Identity: tokens(imdsv1alpha1.ServiceAccountTokenSpec{Audience: "vault", ExpirationSeconds: 60})},
			"spec.identity.serviceAccountTokens[0].expirationSeconds", "should be greater than or equal to 600"),
		Entry("token expiry over a day", "a", imdsv1alpha1.MetadataServiceSpec{
			Identity: tokens(imdsv1alpha1.ServiceAccountTokenSpec{Audience: "vault", ExpirationSeconds: 90000})},
			"spec.identity.serviceAccountTokens[0].expirationSeconds", "should be less than or equal to 86400"),
		Entry("the same audience twice", "a", imdsv1alpha1.MetadataServiceSpec{
			Identity: tokens(imdsv1alpha1.ServiceAccountTokenSpec{Audience: "vault"}, imdsv1alpha1.ServiceAccountTokenSpec{Audience: "vault"})},
			"spec.identity.serviceAccountTokens[1]", "Duplicate value"),
		Entry("an empty audience", "a", imdsv1alpha1.MetadataServiceSpec{
			Identity: tokens(imdsv1alpha1.ServiceAccountTokenSpec{Audience: ""})},
			"spec.identity.serviceAccountTokens[0].audience", "at least 1 chars long"),
		Entry("Inline network data without config", "a", imdsv1alpha1.MetadataServiceSpec{
			NetworkData: &imdsv1alpha1.NetworkDataSpec{Mode: imdsv1alpha1.NetworkDataInline}},
			"spec.networkData", "config is required with mode Inline"),
		Entry("config with Auto network data", "a", imdsv1alpha1.MetadataServiceSpec{
			NetworkData: &imdsv1alpha1.NetworkDataSpec{Mode: imdsv1alpha1.NetworkDataAuto, Config: ptr("network: {version: 2}")}},
			"spec.networkData", "config is required with mode Inline and not allowed otherwise"),
		Entry("an unknown network data mode", "a", imdsv1alpha1.MetadataServiceSpec{
			NetworkData: &imdsv1alpha1.NetworkDataSpec{Mode: "Static"}},
			"spec.networkData.mode", "Unsupported value"),
		Entry("an unknown guest discovery", "a", imdsv1alpha1.MetadataServiceSpec{GuestDiscovery: "ConfigDrive"},
			"spec.guestDiscovery", "Unsupported value"),
		Entry("an unknown dialect", "a", imdsv1alpha1.MetadataServiceSpec{Dialects: []imdsv1alpha1.Dialect{"v1", "azure"}},
			"spec.dialects[1]", "Unsupported value"),
		Entry("a dialect twice", "a", imdsv1alpha1.MetadataServiceSpec{Dialects: []imdsv1alpha1.Dialect{"v1", "v1"}},
			"spec.dialects[1]", "Duplicate value"),
		Entry("a host name that is not a DNS label", "a", imdsv1alpha1.MetadataServiceSpec{Hostname: "web_{name}"},
			"spec", "hostname must be a lower-case RFC 1123 label"),
		Entry("an SSH key that is not OpenSSH", "a", imdsv1alpha1.MetadataServiceSpec{
			SSHAuthorizedKeys: &imdsv1alpha1.SSHKeysSource{Inline: []string{"-----BEGIN PUBLIC KEY-----"}}},
			"spec.sshAuthorizedKeys.inline[0]", "should match"),
		Entry("SSH keys inline and from a Secret", "a", imdsv1alpha1.MetadataServiceSpec{
			SSHAuthorizedKeys: &imdsv1alpha1.SSHKeysSource{Inline: []string{"ssh-ed25519 AAAA a"}, SecretRef: secretRef("s", "k")}},
			"spec.sshAuthorizedKeys", "exactly one of inline and secretRef"),
		Entry("a priority out of range", "a", imdsv1alpha1.MetadataServiceSpec{Priority: 2000000},
			"spec.priority", "should be less than or equal to 1000000"),
		Entry("a name too long for a label value", strings.Repeat("n", 64), imdsv1alpha1.MetadataServiceSpec{},
			"metadata.name", "at most 63 characters"),
	)
})
