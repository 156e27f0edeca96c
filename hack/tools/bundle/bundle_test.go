package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
	corev1 "k8s.io/api/core/v1"
)

const repoRoot = "../../.."

// k8sVersion is the Kubernetes release the tests run against (envtest),
// for the validators that check for removed APIs.
const k8sVersion = "1.37.2"

// falsePositive matches the one warning the validators give that is wrong
// for this bundle: the manager records Events through events.k8s.io/v1, but
// RBAC rules carry no API version, so the deprecated-API check (run by both
// the operatorhub and the deprecated-APIs validators) flags any rule on
// events.k8s.io events as if it were the v1beta1 API removed in 1.25. A
// warning about any other resource still fails.
var falsePositive = regexp.MustCompile(`removed in v1\.25\. .* Migrate the API\(s\) for events: \(\["[^"]*"\]\)$`)

// TestBundleIsValid runs the default bundle validators and the optional
// ones OperatorHub applies (operatorhub v2, standard capabilities and
// categories, good practices, deprecated APIs, objects) on the committed
// bundle. Warnings fail the test too: each is a thing catalogs or consoles
// complain about. MultipleArchitecturesValidator is left out: it inspects
// the images in a registry.
func TestBundleIsValid(t *testing.T) {
	bundle, err := manifests.GetBundleFromDir(filepath.Join(repoRoot, bundleDir))
	if err != nil {
		t.Fatalf("loading bundle/: %v", err)
	}
	if bundle.CSV == nil {
		t.Fatal("bundle/ has no ClusterServiceVersion")
	}
	validators := slices.Concat(validation.DefaultBundleValidators, interfaces.Validators{
		validation.OperatorHubV2Validator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.GoodPracticesValidator,
		validation.AlphaDeprecatedAPIsValidator,
		validation.ObjectValidator,
	})
	objs := append(bundle.ObjectsToValidate(), map[string]string{"k8s-version": k8sVersion})
	var errs, warns, known int
	for _, result := range validators.Validate(objs...) {
		for _, e := range result.Errors {
			errs++
			t.Errorf("%s: %s", result.Name, e)
		}
		for _, w := range result.Warnings {
			if falsePositive.MatchString(w.Error()) {
				known++
				t.Logf("%s: known false positive: %s", result.Name, w)
				continue
			}
			warns++
			t.Errorf("%s: warning: %s", result.Name, w)
		}
	}
	t.Logf("%d validators: %d errors, %d warnings, %d known false positives", len(validators), errs, warns, known)

	if bundle.Package != "kubevirt-imds" || bundle.DefaultChannel != channel || !slices.Equal(bundle.Channels, []string{channel}) {
		t.Errorf("package %q, channels %v, default %q", bundle.Package, bundle.Channels, bundle.DefaultChannel)
	}
}

// TestBundleIsUpToDate regenerates the bundle from config/ and compares it
// with what is committed, so that a change of config/ without `make bundle`
// fails.
func TestBundleIsUpToDate(t *testing.T) {
	want, err := generateFromRepo(repoRoot, "")
	if err != nil {
		t.Fatal(err)
	}
	have, err := existingFiles(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range have {
		if _, ok := want[f]; !ok {
			t.Errorf("%s is not generated any more; run make bundle", f)
		}
	}
	for f, data := range want {
		got, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Errorf("%v; run make bundle", err)
			continue
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s is stale; run make bundle", f)
		}
	}
}

// TestBundleDeployment checks the committed Deployment against what OLM
// provides (the certificate directory, a webhook for each path the manager
// serves) and what the manager expects (its own image as the sidecar's).
func TestBundleDeployment(t *testing.T) {
	bundle, err := manifests.GetBundleFromDir(filepath.Join(repoRoot, bundleDir))
	if err != nil {
		t.Fatal(err)
	}
	deployments := bundle.CSV.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deployments) != 1 {
		t.Fatalf("%d deployments, want 1", len(deployments))
	}
	d := deployments[0]
	args := d.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--webhook-cert-dir="+olmWebhookCertDir) {
		t.Errorf("manager args %v do not read the certificate OLM mounts at %s", args, olmWebhookCertDir)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "KUBEVIRT_IMDS_IMAGE" }); i < 0 || c.Env[i].Value != c.Image {
		t.Errorf("env %v: KUBEVIRT_IMDS_IMAGE (the sidecar image) is not the manager's image %s", c.Env, c.Image)
	}
	if images := bundle.CSV.Spec.RelatedImages; len(images) != 1 || images[0].Image != c.Image {
		t.Errorf("relatedImages %v, want the manager's image %s alone", images, c.Image)
	}
	if len(d.Spec.Template.Spec.Volumes) != 0 {
		t.Errorf("volumes %v: OLM adds the certificate volume itself", d.Spec.Template.Spec.Volumes)
	}
	var paths []string
	for _, w := range bundle.CSV.Spec.WebhookDefinitions {
		if w.DeploymentName != d.Name {
			t.Errorf("webhook %s is served by %q, not %q", w.GenerateName, w.DeploymentName, d.Name)
		}
		if w.TargetPort == nil || w.TargetPort.IntValue() != 9443 {
			t.Errorf("webhook %s: targetPort %v, want the manager's 9443", w.GenerateName, w.TargetPort)
		}
		paths = append(paths, *w.WebhookPath)
	}
	slices.Sort(paths)
	want := []string{"/mutate-kubevirt-io-v1-virtualmachineinstance", "/mutate-v1-pod", "/validate-imds-kubevirt-io-v1alpha1-metadataservice"}
	if !slices.Equal(paths, want) {
		t.Errorf("webhook paths %v, want %v", paths, want)
	}
}

// TestGenerateRejects covers what the generator refuses rather than turns
// into a bundle OLM would install wrongly.
func TestGenerateRejects(t *testing.T) {
	base, err := generateInput(t)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ old, new, want string }{
		"builtin certificates": {"- --leader-elect\n", "- --leader-elect\n        - --webhook-cert-mode=builtin\n", "external mode"},
		"other cert dir":       {"--webhook-cert-dir=/tmp/k8s-webhook-server/serving-certs", "--webhook-cert-dir=/certs", "OLM mounts"},
		"unknown kind":         {"kind: Service\n", "kind: Ingress\n", "does not install this kind"},
		"wrong descriptor":     {"path: selectedInstances", "path: readyInstances", "statusDescriptor readyInstances"},
	} {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(base), tc.old) {
				t.Fatalf("kustomize output lacks %q", tc.old)
			}
			_, err := generate([]byte(strings.Replace(string(base), tc.old, tc.new, 1)), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one about %q", err, tc.want)
			}
		})
	}
}

func generateInput(t *testing.T) ([]byte, error) {
	t.Helper()
	kubectl, err := findKubectl(repoRoot)
	if err != nil {
		return nil, err
	}
	return kustomize(kubectl, repoRoot)
}
