package image_test

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
	gomegatypes "github.com/onsi/gomega/types"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

// dockerignore is the subset of .dockerignore's syntax the build context
// needs: glob patterns with ** and !exceptions, a match excluding a
// directory's whole content.
type dockerignore struct {
	rules []ignoreRule
}

type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

func readDockerignore(root string) (*dockerignore, error) {
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if errors.Is(err, os.ErrNotExist) {
		return &dockerignore{}, nil
	} else if err != nil {
		return nil, err
	}
	ig := &dockerignore{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if p, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, p
		}
		line = strings.Trim(filepath.ToSlash(filepath.Clean(line)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(?:.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		r.re = regexp.MustCompile(re.String())
		ig.rules = append(ig.rules, r)
	}
	return ig, nil
}

// excluded reports whether rel (slash-separated, relative to the context)
// stays out of the build context: the last rule matching it or one of its
// parent directories decides.
func (ig *dockerignore) excluded(rel string) bool {
	out := false
	for _, r := range ig.rules {
		for p := rel; p != "." && p != ""; p = pathDir(p) {
			if r.re.MatchString(p) {
				out = !r.negate
				break
			}
		}
	}
	return out
}

func pathDir(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i]
	}
	return ""
}

// copyContext copies what `docker build .` would send: the repository
// without what .dockerignore excludes.
func copyContext(root, dst string) error {
	ig, err := readDockerignore(root)
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ig.excluded(rel) {
			// Exceptions could re-include something below: descend then.
			if d.IsDir() && !ig.hasExceptions() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		}
		return nil // sockets and the like are no build input
	})
}

func (ig *dockerignore) hasExceptions() bool {
	for _, r := range ig.rules {
		if r.negate {
			return true
		}
	}
	return false
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// imageEnv is the environment the binary has in the image: nothing but
// what the manifests set, since a scratch image has no PATH, HOME or files.
func imageEnv(extra ...string) []string { return append([]string{}, extra...) }

// operatorModule matches the modules of the operator's side (the Kubernetes
// client, controller-runtime, KubeVirt's API, the manager's logger), which
// neither sidecar binary may link.
func operatorModule() gomegatypes.GomegaMatcher {
	return Or(HavePrefix("k8s.io/"), HavePrefix("sigs.k8s.io/controller-runtime"), HavePrefix("kubevirt.io/"), HavePrefix("go.uber.org/zap"))
}

// runBinary runs the binary as the image would, in / with imageEnv.
func runBinary(bin string, env []string, args ...string) *gexec.Session {
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	cmd.Env = env
	s, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	return s
}

var _ = Describe("The binaries of the image's build stage", Ordered, func() {
	var bin, sidecarBin, outDir, contextDir string

	BeforeAll(func() {
		root := controlplane.RepoRoot()
		contextDir = GinkgoT().TempDir()
		Expect(copyContext(root, contextDir)).To(Succeed())
		outDir = filepath.Join(GinkgoT().TempDir(), "out")
		// As the Dockerfile runs it, in the copied build context, for the
		// platform this test runs on.
		cmd := exec.Command(filepath.Join(contextDir, buildScript), outDir)
		cmd.Dir = contextDir
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+runtime.GOARCH)
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s in the build context:\n%s", buildScript, out)
		bin, sidecarBin = filepath.Join(outDir, controlplane.OperatorBinary), filepath.Join(outDir, controlplane.SidecarBinary)
	})

	It("are the operator's and the sidecar's two, and nothing else: the final stage copies the directory to /", func() {
		entries, err := os.ReadDir(outDir)
		Expect(err).NotTo(HaveOccurred())
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		Expect(names).To(ConsistOf(controlplane.OperatorBinary, controlplane.SidecarBinary, controlplane.SidecarNetAdminBinary))
	})

	DescribeTable("are static, stripped ELF executables for the target platform", func(name string) {
		f, err := elf.Open(filepath.Join(outDir, name))
		Expect(err).NotTo(HaveOccurred())
		defer f.Close()
		Expect(f.Type).To(Equal(elf.ET_EXEC), "a position-dependent executable, as CGO_ENABLED=0 builds")
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "s390x": elf.EM_S390, "ppc64le": elf.EM_PPC64}
		if m, ok := want[runtime.GOARCH]; ok {
			Expect(f.Machine).To(Equal(m))
		}
		for _, p := range f.Progs {
			Expect(p.Type).NotTo(Equal(elf.PT_INTERP), "no dynamic loader: a scratch image has none")
			Expect(p.Type).NotTo(Equal(elf.PT_DYNAMIC), "no dynamic section")
		}
		libs, err := f.ImportedLibraries()
		Expect(err).NotTo(HaveOccurred())
		Expect(libs).To(BeEmpty())
		Expect(f.Section(".symtab")).To(BeNil(), "-ldflags=-s strips the symbol table")
		Expect(f.Section(".debug_info")).To(BeNil(), "-ldflags=-w drops DWARF")
	},
		Entry("the operator's", controlplane.OperatorBinary),
		Entry("the sidecar's", controlplane.SidecarBinary),
		Entry("the sidecar's of mode \"sidecar\"", controlplane.SidecarNetAdminBinary),
	)

	It("hold no path of the machine they were built on (-trimpath)", func() {
		for _, b := range []string{bin, sidecarBin, filepath.Join(outDir, controlplane.SidecarNetAdminBinary)} {
			data, err := os.ReadFile(b)
			Expect(err).NotTo(HaveOccurred())
			Expect(bytes.Contains(data, []byte(contextDir))).To(BeFalse(), b)
		}
	})

	It("keep the per-VM sidecar free of the operator: no Kubernetes client, controller-runtime or KubeVirt module is linked", func() {
		info, err := buildinfo.ReadFile(sidecarBin)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Path).To(Equal("github.com/kubevirt-imds/kubevirt-imds/sidecar/cmd/kubevirt-imds-sidecar"))
		for _, dep := range info.Deps {
			Expect(dep.Path).NotTo(operatorModule(), "the sidecar links %s", dep.Path)
		}
		op, err := os.Stat(bin)
		Expect(err).NotTo(HaveOccurred())
		sc, err := os.Stat(sidecarBin)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("operator binary %d bytes, sidecar binary %d bytes\n", op.Size(), sc.Size())
		Expect(sc.Size()).To(BeNumerically("<", op.Size()/3), "the sidecar is a fraction of the operator")
	})

	It("keep the plumbing of mode \"sidecar\" out of the per-VM binary of mode \"node\", in a binary of its own, also free of the operator", func() {
		info, err := buildinfo.ReadFile(sidecarBin)
		Expect(err).NotTo(HaveOccurred())
		// The ARP responder, and the netlink and nftables libraries that
		// write links, addresses and tables (sidecar/netapply).
		plumbingModules := Or(Equal("github.com/mdlayher/arp"), Equal("github.com/mdlayher/packet"),
			Equal("github.com/google/nftables"), Equal("github.com/vishvananda/netlink"), Equal("github.com/vishvananda/netns"))
		for _, dep := range info.Deps {
			Expect(dep.Path).NotTo(plumbingModules, "the per-VM binary links the plumbing's %s", dep.Path)
		}
		netadmin := filepath.Join(outDir, controlplane.SidecarNetAdminBinary)
		info, err = buildinfo.ReadFile(netadmin)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Path).To(Equal("github.com/kubevirt-imds/kubevirt-imds/sidecar/cmd/kubevirt-imds-sidecar-netadmin"))
		Expect(info.Deps).To(ContainElements(HaveField("Path", "github.com/mdlayher/arp"), HaveField("Path", "github.com/google/nftables"),
			HaveField("Path", "github.com/vishvananda/netlink")))
		for _, dep := range info.Deps {
			Expect(dep.Path).NotTo(operatorModule(), "the netadmin binary links %s", dep.Path)
		}
		sc, err := os.Stat(sidecarBin)
		Expect(err).NotTo(HaveOccurred())
		na, err := os.Stat(netadmin)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("sidecar binary %d bytes, netadmin binary %d bytes\n", sc.Size(), na.Size())
		Expect(sc.Size()).To(BeNumerically("<", na.Size()))
	})

	It("list their subcommands", func() {
		for b, subs := range map[string][]string{bin: {"manager", "node-agent"}, sidecarBin: {"serve", "probe"}} {
			s := runBinary(b, imageEnv(), "--help")
			Eventually(s).Should(gexec.Exit(0))
			for _, sub := range subs {
				Expect(string(s.Err.Contents())).To(MatchRegexp(`(?m)^\s+%s\s`, sub))
			}
			s = runBinary(b, imageEnv(), "no-such-subcommand")
			Eventually(s).Should(gexec.Exit(2))
			Expect(string(s.Err.Contents())).To(ContainSubstring(`unknown subcommand "no-such-subcommand"`))
		}
	})

	It("run `manager --help` and `serve --help`", func() {
		s := runBinary(bin, imageEnv(), "manager", "--help")
		Eventually(s).Should(gexec.Exit(0))
		for _, f := range []string{"-leader-elect", "-webhook-cert-mode", "-sidecar-image", "-health-probe-bind-address"} {
			Expect(string(s.Err.Contents())).To(ContainSubstring(f))
		}
		s = runBinary(sidecarBin, imageEnv(), "serve", "--help")
		Eventually(s).Should(gexec.Exit(0))
		for _, f := range []string{"-payload-dir", "-token-dir", "-admin-address"} {
			Expect(string(s.Err.Contents())).To(ContainSubstring(f))
		}
	})

	It("validates the sidecar's and the manager's settings before doing anything", func() {
		// The admin endpoint must never be reachable by the guest.
		s := runBinary(sidecarBin, imageEnv(), "serve", "--admin-address=0.0.0.0:8081")
		Eventually(s).Should(gexec.Exit(1))
		Expect(string(s.Err.Contents())).To(ContainSubstring("must be a loopback address"))
		By("serving mode node in the per-VM binary itself, and running the netadmin binary in its place for mode sidecar")
		s = runBinary(sidecarBin, imageEnv(), "serve", "--network-setup=node", "--payload-dir=")
		Eventually(s).Should(gexec.Exit(1))
		Expect(string(s.Err.Contents())).To(HavePrefix("kubevirt-imds-sidecar serve: --payload-dir is required"))
		s = runBinary(sidecarBin, imageEnv(), "serve", "--network-setup=sidecar", "--payload-dir=")
		Eventually(s).Should(gexec.Exit(1))
		Expect(string(s.Err.Contents())).To(HavePrefix("kubevirt-imds-sidecar-netadmin serve: --payload-dir is required"))
		s = runBinary(bin, imageEnv(), "manager", "--webhook-cert-mode=builtin")
		Eventually(s).Should(gexec.Exit(1))
		Expect(string(s.Err.Contents())).To(ContainSubstring("needs --webhook-cert-namespace"))
		s = runBinary(bin, imageEnv(), "manager")
		Eventually(s).Should(gexec.Exit(1))
		Expect(string(s.Err.Contents())).To(ContainSubstring("--sidecar-image"))
	})

	Context("against a real API server", func() {
		var (
			env        *envtest.Environment
			kubeconfig string
			k8s        client.Client
			manager    *gexec.Session
			installed  installedRBAC
		)

		BeforeAll(func() {
			var err error
			env, _, err = controlplane.Start(controlplane.Options{})
			if errors.Is(err, controlplane.ErrNoAssets) {
				controlplane.Unavailable(err.Error())
			}
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
			admin, err := env.AddUser(envtest.User{Name: "image-test", Groups: []string{"system:masters"}}, nil)
			Expect(err).NotTo(HaveOccurred())
			scheme, err := controllers.NewScheme()
			Expect(err).NotTo(HaveOccurred())
			k8s, err = client.New(admin.Config(), client.Options{Scheme: scheme})
			Expect(err).NotTo(HaveOccurred())

			// The manager runs with exactly the rights config/default grants
			// its ServiceAccount: the API server authorises a client
			// certificate named like the ServiceAccount as it would the
			// ServiceAccount's token.
			installed = installRBAC(k8s)
			sa := fmt.Sprintf("system:serviceaccount:%s:%s", installed.namespace, installed.serviceAccount)
			user, err := env.AddUser(envtest.User{Name: sa, Groups: []string{
				"system:serviceaccounts", "system:serviceaccounts:" + installed.namespace, "system:authenticated",
			}}, nil)
			Expect(err).NotTo(HaveOccurred())
			data, err := user.KubeConfig()
			Expect(err).NotTo(HaveOccurred())
			kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
			Expect(os.WriteFile(kubeconfig, data, 0o600)).To(Succeed())
		})

		AfterAll(func() {
			if manager != nil {
				manager.Terminate()
				Eventually(manager).Should(gexec.Exit())
			}
		})

		It("runs the manager with the RBAC of config/default: ready, writing payloads and status", func(ctx SpecContext) {
			probeAddr := freeLoopbackAddress()
			// Webhooks need certificates and a reachable Service; the
			// controller alone shows that the binary runs the operator.
			manager = runBinary(bin, imageEnv("KUBECONFIG="+kubeconfig),
				"manager", "--enable-webhooks=false", "--metrics-bind-address=0", "--health-probe-bind-address="+probeAddr)
			// The image's own probe (the exec liveness probe of Pods that
			// earlier releases injected), as the kubelet runs it.
			Eventually(func() int {
				p := runBinary(sidecarBin, imageEnv(), "probe", "http://"+probeAddr+"/readyz")
				return p.Wait(10 * time.Second).ExitCode()
			}).Should(Equal(0))
			Expect(manager.ExitCode()).To(Equal(-1), "the manager is still running")

			ns := &corev1.Namespace{}
			ns.GenerateName = "image-"
			Expect(k8s.Create(ctx, ns)).To(Succeed())
			vmi := fixtures.VMI(ns.Name, "vm-1", map[string]string{"app": "web"})
			Expect(k8s.Create(ctx, vmi)).To(Succeed())
			mds := fixtures.MetadataService(ns.Name, "web", imdsv1alpha1.MetadataServiceSpec{
				Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			})
			Expect(k8s.Create(ctx, mds)).To(Succeed())
			Eventually(func() error {
				var s corev1.Secret
				return k8s.Get(ctx, types.NamespacedName{Namespace: ns.Name, Name: imdsv1alpha1.PayloadSecretName(vmi.Name)}, &s)
			}).Should(Succeed(), "the manager writes the payload Secret")
			Eventually(func() int32 {
				var got imdsv1alpha1.MetadataService
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(mds), &got); err != nil && !apierrors.IsNotFound(err) {
					return -1
				}
				return got.Status.SelectedInstances
			}).Should(Equal(int32(1)), "the manager reports the selection in the status")
			// Events and watches only log what RBAC refuses.
			Expect(string(manager.Err.Contents())).NotTo(ContainSubstring("forbidden"))
		})

		It("refuses the manager's ServiceAccount every Secret write but a payload Secret's outside its namespace (config/default's admission policy)", func(ctx SpecContext) {
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			Expect(err).NotTo(HaveOccurred())
			asManager, err := client.New(cfg, client.Options{})
			Expect(err).NotTo(HaveOccurred())

			ns := &corev1.Namespace{}
			ns.GenerateName = "user-"
			Expect(k8s.Create(ctx, ns)).To(Succeed())
			users := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "database-password"},
				StringData: map[string]string{"password": "hunter2"},
			}
			Expect(k8s.Create(ctx, users)).To(Succeed())

			refused := func(err error) {
				GinkgoHelper()
				Expect(apierrors.IsForbidden(err)).To(BeTrue(), "forbidden, got %v", err)
				Expect(err.Error()).To(ContainSubstring("may only write Secrets of type " + string(controllers.PayloadSecretType)))
			}
			// The policy takes effect once the API server has loaded it.
			Eventually(func() error {
				return asManager.Create(ctx, &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "planted"},
					StringData: map[string]string{"k": "v"},
				})
			}).Should(MatchError(ContainSubstring("may only write Secrets")), "creating an Opaque Secret")

			var mine corev1.Secret
			Expect(asManager.Get(ctx, client.ObjectKeyFromObject(users), &mine)).To(Succeed(), "RBAC still lets it read")
			mine.Data["password"] = []byte("changed")
			refused(asManager.Update(ctx, &mine))
			refused(asManager.Delete(ctx, &mine))
			var after corev1.Secret
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(users), &after)).To(Succeed())
			Expect(after.Data).To(HaveKeyWithValue("password", []byte("hunter2")), "the user's Secret is untouched")

			payload := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: imdsv1alpha1.PayloadSecretName("vm-x")},
				Type:       controllers.PayloadSecretType,
				Data:       map[string][]byte{"payload.json": []byte("{}")},
			}
			Expect(asManager.Create(ctx, payload)).To(Succeed(), "a payload Secret")
			payload.Data["payload.json"] = []byte(`{"v":1}`)
			Expect(asManager.Update(ctx, payload)).To(Succeed())
			Expect(asManager.Delete(ctx, payload)).To(Succeed())

			// Its own namespace keeps the identity key (an Opaque Secret).
			own := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: installed.namespace, Name: "identity-key-test"},
				StringData: map[string]string{"k": "v"},
			}
			Expect(asManager.Create(ctx, own)).To(Succeed(), "a Secret in the operator's namespace")
			Expect(asManager.Delete(ctx, own)).To(Succeed())
		})

		It("grants the Namespace reads of the Pod webhook in --sidecar-network-setup=sidecar (the OLM bundle's setting)", func(ctx SpecContext) {
			// The webhook reads a Namespace's Pod Security label through an
			// informer on every Namespace; refused, the cache never syncs
			// and no Pod gets the sidecar.
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			Expect(err).NotTo(HaveOccurred())
			c, err := client.NewWithWatch(cfg, client.Options{})
			Expect(err).NotTo(HaveOccurred())
			var list corev1.NamespaceList
			Expect(c.List(ctx, &list)).To(Succeed(), "list (the informer's first call)")
			Expect(list.Items).NotTo(BeEmpty())
			var ns corev1.Namespace
			Expect(c.Get(ctx, types.NamespacedName{Name: list.Items[0].Name}, &ns)).To(Succeed())
			w, err := c.Watch(ctx, &corev1.NamespaceList{})
			if err == nil {
				w.Stop()
			}
			Expect(err).NotTo(HaveOccurred(), "watch (the informer's second)")
		})
	})
})

// freeLoopbackAddress is a loopback TCP address nothing listens on now.
func freeLoopbackAddress() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().String()
}

// installedRBAC is what installRBAC found in config/default.
type installedRBAC struct {
	namespace, serviceAccount string
}

// installRBAC creates the operator's namespace, roles and bindings from
// `kubectl kustomize config/default`, as an installation would.
func installRBAC(k8s client.Client) installedRBAC {
	cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "kustomize",
		filepath.Join(controlplane.RepoRoot(), "config", "default"))
	cmd.Stderr = GinkgoWriter
	out, err := cmd.Output()
	Expect(err).NotTo(HaveOccurred(), "kubectl kustomize config/default")
	var got installedRBAC
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else {
			Expect(err).NotTo(HaveOccurred())
		}
		gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
		Expect(err).NotTo(HaveOccurred())
		switch {
		case gv.Group == "" && u.GetKind() == "Namespace":
			got.namespace = u.GetName()
		case gv.Group == "" && u.GetKind() == "ServiceAccount":
			// The node agent has one too; the manager's is controller-manager.
			if strings.HasSuffix(u.GetName(), "controller-manager") {
				got.serviceAccount = u.GetName()
			}
		case gv.Group == "rbac.authorization.k8s.io":
		case gv.Group == "admissionregistration.k8s.io" && strings.HasPrefix(u.GetKind(), "ValidatingAdmissionPolicy"):
			// What bounds the manager's Secret writes beyond RBAC.
		default:
			continue
		}
		Expect(k8s.Create(context.Background(), u)).To(Succeed(), "creating %s %s", u.GetKind(), u.GetName())
	}
	Expect(got.namespace).NotTo(BeEmpty(), "config/default creates the operator's namespace")
	Expect(got.serviceAccount).NotTo(BeEmpty(), "config/default creates the manager's ServiceAccount")
	return got
}
