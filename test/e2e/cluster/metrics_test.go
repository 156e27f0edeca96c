//go:build e2e

package cluster_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// portForward forwards a local port on 127.0.0.1 to port of the Pod
// namespace/name with kubectl, until cleanup, and returns the local address.
func portForward(ctx context.Context, namespace, name, port string) string {
	GinkgoHelper()
	fctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(fctx, "kubectl", "--context", kubeContext, "-n", namespace, "port-forward", "--address=127.0.0.1", "pod/"+name, ":"+port)
	out, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() { cancel(); _ = cmd.Wait() })
	forwarding := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) ->`)
	found := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if m := forwarding.FindStringSubmatch(s.Text()); m != nil {
				found <- m[1]
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
	}()
	var addr string
	Eventually(found).WithContext(ctx).WithTimeout(time.Minute).Should(Receive(&addr))
	return addr
}

// scrape GETs https://addr/metrics (the agent's self-signed certificate)
// with token, if any, and returns the status and body.
func scrape(ctx context.Context, addr, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the agent's self-signed serving certificate
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// serviceAccountToken creates ServiceAccount name in namespace, bound to
// clusterRole unless it is empty, and returns a token for it.
func serviceAccountToken(ctx context.Context, namespace, name, clusterRole string) string {
	GinkgoHelper()
	Expect(k8sClient.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}})).To(Succeed())
	if clusterRole != "" {
		b := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: namespace + "-" + name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}},
		}
		Expect(k8sClient.Create(ctx, b)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, b))).To(Succeed()) })
	}
	tr, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(600))},
	}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return tr.Status.Token
}

// expectFleetMetrics scrapes the node agent, as the PodMonitor of
// config/prometheus does, and finds the series of the sidecar serving the
// VMI name in namespace; the scrape needs a token allowed to read metrics.
func expectFleetMetrics(ctx context.Context, vmiName string) {
	GinkgoHelper()
	var agents corev1.PodList
	Expect(k8sClient.List(ctx, &agents, client.InNamespace(operatorNamespace),
		client.MatchingLabels{"app.kubernetes.io/component": "node-agent"})).To(Succeed())
	Expect(agents.Items).To(HaveLen(1), "one node, one agent")
	addr := portForward(ctx, operatorNamespace, agents.Items[0].Name, "9641")

	By("refusing a scrape without a token, and one whose token may not read metrics")
	code, _, err := scrape(ctx, addr, "")
	Expect(err).NotTo(HaveOccurred())
	Expect(code).To(Equal(http.StatusUnauthorized))
	code, _, err = scrape(ctx, addr, serviceAccountToken(ctx, namespace, "no-metrics", ""))
	Expect(err).NotTo(HaveOccurred())
	Expect(code).To(Equal(http.StatusForbidden))

	By("serving the sidecars' series, labelled with their VMI, to a metrics reader")
	token := serviceAccountToken(ctx, namespace, "metrics-scraper", "kubevirt-imds-metrics-reader")
	Eventually(func(g Gomega) {
		code, body, err := scrape(ctx, addr, token)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(code).To(Equal(http.StatusOK))
		g.Expect(body).NotTo(ContainSubstring("kubevirt_imds_manager_"), "only the agent's and the sidecars' series")
		g.Expect(body).To(MatchRegexp(`(?m)^kubevirt_imds_node_agent_sidecars [1-9]`), "the agent counts the sidecars it serves")
		var served []string
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "kubevirt_imds_sidecar_requests_total{") &&
				strings.Contains(line, `vmi_namespace="`+namespace+`"`) && strings.Contains(line, `vmi_name="`+vmiName+`"`) {
				served = append(served, line)
			}
		}
		g.Expect(served).NotTo(BeEmpty(), "the guest's requests in the agent's scrape:\n%s", body)
	}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
}
