package guestspecs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	authenticationv1 "k8s.io/api/authentication/v1"
	"sigs.k8s.io/yaml"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// The sample MetadataService's user-data (config/samples) writes MotdFile
// and stores the guest's Vault token in TokenFile.
const (
	MotdFile      = "/etc/motd"
	MotdContent   = "Configured by kubevirt-imds\n"
	TokenFile     = "/root/vault-token.json"
	TokenAudience = "vault"
)

// The sample's SSH key, which cloud-init installs for the image's default
// user: the login a user of a Debian cloud image tries first.
const (
	SSHKey             = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl demo@example"
	AuthorizedKeysFile = "/home/debian/.ssh/authorized_keys"
)

// ReadSampleService decodes the sample MetadataService from config/samples,
// rejecting fields the API does not have.
func ReadSampleService() (imdsv1alpha1.MetadataService, error) {
	var mds imdsv1alpha1.MetadataService
	path := filepath.Join(controlplane.RepoRoot(), "config", "samples", "imds_v1alpha1_metadataservice.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		return mds, err
	}
	if err := yaml.UnmarshalStrict(raw, &mds); err != nil {
		return mds, fmt.Errorf("%s: %w", path, err)
	}
	return mds, nil
}

// TokenReviewer asks the API server who a token belongs to.
type TokenReviewer interface {
	ReviewToken(ctx context.Context, token, audience string) (authenticationv1.TokenReviewStatus, error)
}

// Sample is what a guest of the sample MetadataService must have got.
type Sample struct {
	// InstanceID is the VMI's firmware UUID, or its UID without one.
	InstanceID string
	// Hostname is the VMI's name (the sample's hostname template).
	Hostname string
	// ServiceAccount is the virt-launcher Pod's, as namespace:name.
	ServiceAccount string
	// PodName, when set, is the launcher Pod the token must be bound to.
	PodName string
	// Address, when set, is an address the guest must have from DHCP on
	// whichever NIC ("10.0.2.2/24"; a VM names it enp0s1, a namespace eth0).
	Address string
}

// ExpectSampleGuest checks, from inside g, what a user of the sample
// MetadataService checks: cloud-init finished from NoCloud with the
// instance's identity, the user-data ran, the SSH key is installed, and the
// token it fetched is the API server's, for its audience only.
func ExpectSampleGuest(ctx context.Context, g Guest, want Sample, reviewer TokenReviewer) {
	GinkgoHelper()
	f := g.Boot()
	GinkgoWriter.Printf("%s booted in %.1fs:\n%s", g.Kind(), f.Duration.Seconds(), f.Describe())

	By("cloud-init finishing cleanly from the metadata service")
	Expect(f.Status).To(Equal("status: done"))
	Expect(f.ExitCode).To(Equal(0))
	Expect(f.Datasource).To(ContainSubstring("NoCloud"))
	Expect(f.InstanceID).To(Equal(want.InstanceID))
	Expect(f.Hostname).To(Equal(want.Hostname))

	By("the user-data's file")
	Expect(g.ReadFile(ctx, MotdFile)).To(Equal(MotdContent))
	if want.Address != "" {
		Expect(IPv4Addresses(f.Addresses)).To(ContainElement(And(HavePrefix(want.Address+" on "), HaveSuffix(" (DHCP)"))))
	}

	ExpectSampleSSHKey(ctx, g)

	By("the token the guest fetched being the API server's, for its audience only")
	raw, err := g.ReadFile(ctx, TokenFile)
	Expect(err).NotTo(HaveOccurred())
	var tok struct{ Audience, Token string }
	Expect(json.Unmarshal([]byte(raw), &tok)).To(Succeed(), raw)
	Expect(tok.Audience).To(Equal(TokenAudience))
	st, err := reviewer.ReviewToken(ctx, tok.Token, TokenAudience)
	Expect(err).NotTo(HaveOccurred())
	Expect(st.Authenticated).To(BeTrue(), st.Error)
	Expect(st.User.Username).To(Equal("system:serviceaccount:" + want.ServiceAccount))
	if want.PodName != "" {
		Expect(st.User.Extra).To(HaveKeyWithValue("authentication.kubernetes.io/pod-name", ConsistOf(want.PodName)))
	}
	st, err = reviewer.ReviewToken(ctx, tok.Token, "another-audience")
	Expect(err).NotTo(HaveOccurred())
	Expect(st.Authenticated).To(BeFalse(), "the token is scoped to its audience")
}

// ExpectSampleSSHKey checks that cloud-init installed the sample's SSH key
// for the image's default user (the images have no sshd to log in to).
func ExpectSampleSSHKey(ctx context.Context, g Guest) {
	GinkgoHelper()
	By("the SSH key, for the image's default user")
	keys, err := g.ReadFile(ctx, AuthorizedKeysFile)
	Expect(err).NotTo(HaveOccurred())
	Expect(strings.Split(strings.TrimSpace(keys), "\n")).To(ContainElement(SSHKey), AuthorizedKeysFile)
}
