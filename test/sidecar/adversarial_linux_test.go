package sidecar_test

// The guest as an attacker: raw HTTP from the guest's network namespace
// against the real sidecar binary in a Pod-like namespace, with its
// production limits (docs/security.md, "Requests"). Every spec checks what
// the guest sees — status codes, closed connections — and that a
// legitimate request made during the attack is answered correctly.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

const imdsAddr = "169.254.169.254:80"

// rawConn is a guest connection to the sidecar that sends bytes as given.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

// dialIMDS connects from the guest's namespace.
func dialIMDS(ctx context.Context, pod *podnet.Pod) *rawConn {
	GinkgoHelper()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := pod.Guest.Dial(dctx, "tcp4", imdsAddr)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(c.Close)
	Expect(c.SetDeadline(time.Now().Add(15 * time.Second))).To(Succeed())
	return &rawConn{Conn: c, r: bufio.NewReader(c)}
}

// send writes raw and reads one response with its body.
func (c *rawConn) send(raw string) (*http.Response, string) {
	GinkgoHelper()
	_, err := io.WriteString(c, raw)
	Expect(err).NotTo(HaveOccurred())
	return c.response()
}

func (c *rawConn) response() (*http.Response, string) {
	GinkgoHelper()
	resp, err := http.ReadResponse(c.r, nil)
	Expect(err).NotTo(HaveOccurred(), "reading the response")
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp, string(b)
}

// expectClosed expects the sidecar to have closed the connection: the next
// read ends without data.
func (c *rawConn) expectClosed() {
	GinkgoHelper()
	_, err := c.r.ReadByte()
	Expect(err).To(HaveOccurred(), "the connection is still open")
	var ne net.Error
	Expect(errors.As(err, &ne) && ne.Timeout()).To(BeFalse(), "the connection is still open: %v", err)
}

// head is a request head from its lines.
func head(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n\r\n" }

// expectLegitimate makes the requests cloud-init and a token client make,
// each on a new connection, and checks their answers.
func expectLegitimate(ctx context.Context, pod *podnet.Pod) {
	GinkgoHelper()
	code, body, err := pod.GuestGet(ctx, metaURL)
	Expect(err).NotTo(HaveOccurred(), "a legitimate request during the attack")
	Expect(code).To(Equal(http.StatusOK))
	Expect(body).To(ContainSubstring("instance-id: " + storetest.Document().Instance.ID))

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://169.254.169.254/v1/token", nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Metadata", "true")
	resp, err := pod.Guest.HTTPClient(5 * time.Second).Do(req)
	Expect(err).NotTo(HaveOccurred(), "a token request during the attack")
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	Expect(resp.StatusCode).To(Equal(http.StatusOK), string(b))
	Expect(string(b)).To(ContainSubstring(`"audience":"vault"`))
}

// writeTokens writes a token for storetest's audience in kubelet's layout.
func writeTokens() string {
	dir := worldReadableTempDir()
	Expect(storetest.WriteToken(dir, "vault", storetest.JWT("vault", time.Now().Add(time.Hour)))).To(Succeed())
	return dir
}

// refusedCounts reads kubevirt_imds_sidecar_refused_requests_total by reason.
func refusedCounts(ctx context.Context, pod *podnet.Pod, metric string) map[string]int {
	GinkgoHelper()
	code, body, err := pod.AdminGet(ctx, "http://127.0.0.2:8081/metrics")
	Expect(err).NotTo(HaveOccurred())
	Expect(code).To(Equal(http.StatusOK))
	out := map[string]int{}
	re := regexp.MustCompile(`(?m)^kubevirt_imds_sidecar_` + metric + `\{reason="([a-z-]+)"\} (\d+)$`)
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		n, err := strconv.Atoi(m[2])
		Expect(err).NotTo(HaveOccurred())
		out[m[1]] = n
	}
	return out
}

// attackers holds n connections from the guest, each opened by open; when
// the sidecar closes one, it is reopened, as an attacker holding
// connections would. It returns how often the sidecar closed one and a stop
// function.
func attackers(ctx context.Context, pod *podnet.Pod, n int, open func(net.Conn) error) (closedCount func() int, stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	closed := 0
	var wg sync.WaitGroup
	// Each dial switches a locked thread into the guest's namespace: a
	// few at a time keep the thread count small.
	dials := make(chan struct{}, 32)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for ctx.Err() == nil {
				dials <- struct{}{}
				c, err := pod.Guest.Dial(ctx, "tcp4", imdsAddr)
				<-dials
				if err != nil {
					continue
				}
				stopped := context.AfterFunc(ctx, func() { c.Close() })
				if open(c) == nil {
					for {
						if _, err := c.Read(buf); err != nil {
							break
						}
					}
				}
				stopped()
				c.Close()
				if ctx.Err() == nil {
					mu.Lock()
					closed++
					mu.Unlock()
				}
			}
		}()
	}
	return func() int {
			mu.Lock()
			defer mu.Unlock()
			return closed
		}, func() {
			cancel()
			wg.Wait()
		}
}

var _ = Describe("the sidecar against a hostile guest", Label("adversarial"), func() {
	var (
		pod *podnet.Pod
		p   *sidecarProc
	)
	start := func(ctx context.Context, extra ...string) {
		GinkgoHelper()
		pod = podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		// Info, as in production: the refusal lines are what is checked.
		args := append([]string{"--log-level", "info", "--token-dir", writeTokens()}, extra...)
		p = startSidecar(pod, writePayload(), args...)
		expectServed(ctx, pod)
	}

	Context("with the production limits", Ordered, func() {
		BeforeAll(func(ctx SpecContext) { start(ctx, "--allowed-hosts", "instance-data") })

		DescribeTable("refuses ambiguous framing with a 400 (or the head's own status) and closes the connection, serving nothing smuggled",
			func(ctx SpecContext, raw string, code int, reason string) {
				before := refusedCounts(ctx, pod, "refused_requests_total")[reason]
				c := dialIMDS(ctx, pod)
				// A legitimate request first: the refusal closes a
				// kept-alive connection too.
				resp, _ := c.send(head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254"))
				Expect(resp.StatusCode).To(Equal(http.StatusOK))
				resp, _ = c.send(raw)
				Expect(resp.StatusCode).To(Equal(code))
				Expect(resp.Close).To(BeTrue(), "Connection: close")
				c.expectClosed()
				Expect(refusedCounts(ctx, pod, "refused_requests_total")[reason]).To(Equal(before + 1))
				Expect(p.logs.String()).To(MatchRegexp(`"msg":"request refused"[^\n]*"reason":"` + reason + `","status":` + strconv.Itoa(code)))
				Expect(p.logs.String()).NotTo(ContainSubstring(`"uri":"/v1/token?smuggled"`))
				expectLegitimate(ctx, pod)
			},
			Entry("Content-Length and Transfer-Encoding, a token request hidden in the body",
				"POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 72\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
					head("GET /v1/token?smuggled HTTP/1.1", "Host: 169.254.169.254", "Metadata: true"), 400, "framing"),
			Entry("chunked, with a trailer naming a proxy header",
				"GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n", 400, "framing"),
			Entry("Transfer-Encoding on HTTP/1.0",
				"POST /openstack/latest/password HTTP/1.0\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "framing"),
			Entry("two Content-Length fields",
				head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 0", "Content-Length: 0"), 400, "framing"),
			Entry("a Content-Length list",
				head("POST /openstack/latest/password HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 3, 3")+"abc", 400, "framing"),
			Entry("an obs-folded Transfer-Encoding",
				head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "X-A: a", " Transfer-Encoding: chunked"), 400, "framing"),
			Entry("an obs-folded Content-Length value",
				head("POST /openstack/latest/password HTTP/1.1", "Host: 169.254.169.254", "Content-Length:", " 3")+"abc", 400, "framing"),
			Entry("a bare LF ending a line",
				"GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\nContent-Length: 3\r\n\r\nabc", 400, "framing"),
			Entry("whitespace before the colon",
				head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "Content-Length : 3")+"abc", 400, "malformed"),
			Entry("two Host fields", head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "Host: evil.example"), 400, "malformed"),
			Entry("no Host", head("GET /nocloud/meta-data HTTP/1.1"), 400, "malformed"),
			Entry("a head of 8 KiB and one byte",
				head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "X: "+strings.Repeat("x", 8192+1-len(head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "X: ")))), 431, "header-size"),
			Entry("a head of 12 KiB", head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "X: "+strings.Repeat("x", 12<<10)), 431, "header-size"),
			Entry("HTTP/2.0 in a request line", head("GET /nocloud/meta-data HTTP/2.0", "Host: 169.254.169.254"), 505, "version"),
			Entry("the HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "version"),
			Entry("HTTP/0.9", "GET /nocloud/meta-data\r\n\r\n", 400, "malformed"),
		)

		It("serves a head of exactly 8 KiB", func(ctx SpecContext) {
			pre := head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "X: ")
			c := dialIMDS(ctx, pod)
			resp, body := c.send(head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "X: "+strings.Repeat("x", 8192-len(pre))))
			Expect(resp.StatusCode).To(Equal(http.StatusOK))
			Expect(body).To(ContainSubstring("instance-id:"))
		})

		DescribeTable("answers only the names it serves, on every dialect",
			func(ctx SpecContext, target, host string, code int) {
				c := dialIMDS(ctx, pod)
				resp, _ := c.send(head("GET "+target+" HTTP/1.1", "Host: "+host, "Metadata: true"))
				Expect(resp.StatusCode).To(Equal(code))
				expectLegitimate(ctx, pod)
			},
			Entry("the address", "/nocloud/meta-data", "169.254.169.254", 200),
			Entry("the address and port", "/nocloud/meta-data", "169.254.169.254:80", 200),
			Entry("a configured name", "/openstack/latest/meta_data.json", "instance-data", 200),
			Entry("another port", "/nocloud/meta-data", "169.254.169.254:8080", 421),
			Entry("an empty Host", "/nocloud/meta-data", "", 421),
			Entry("a rebound name, NoCloud", "/nocloud/user-data", "attacker.example", 421),
			Entry("a rebound name, OpenStack", "/openstack/latest/user_data", "attacker.example", 421),
			Entry("a rebound name, EC2", "/latest/user-data", "attacker.example:80", 421),
			Entry("a rebound name, /v1 token", "/v1/token", "attacker.example", 421),
			Entry("a rebound name, unknown path", "/nope", "attacker.example", 421),
			Entry("a name ending in the address", "/nocloud/meta-data", "169.254.169.254.nip.io", 421),
			Entry("absolute form naming another host", "http://attacker.example/v1/token", "169.254.169.254", 421),
			Entry("absolute form naming the address", "http://169.254.169.254/nocloud/meta-data", "attacker.example", 200),
			Entry("absolute form over https", "https://169.254.169.254/nocloud/meta-data", "169.254.169.254", 421),
		)

		DescribeTable("refuses requests carrying a proxy's header, on every dialect",
			func(ctx SpecContext, header string) {
				for _, target := range []string{"/nocloud/meta-data", "/openstack/latest/meta_data.json", "/latest/meta-data/instance-id", "/v1/token", "/v1/identity"} {
					c := dialIMDS(ctx, pod)
					resp, _ := c.send(head("GET "+target+" HTTP/1.1", "Host: 169.254.169.254", "Metadata: true", header))
					Expect(resp.StatusCode).To(Equal(http.StatusForbidden), "%s with %s", target, header)
				}
				expectLegitimate(ctx, pod)
			},
			Entry(nil, "X-Forwarded-For: 10.0.0.1"),
			Entry(nil, "X-Forwarded-Host: attacker.example"),
			Entry(nil, "X-Forwarded-Proto: http"),
			Entry(nil, "Forwarded: for=10.0.0.1"),
			Entry(nil, "X-Real-IP: 10.0.0.1"),
			Entry(nil, "Via: 1.1 squid"),
			Entry(nil, "True-Client-IP: 10.0.0.1"),
			Entry(nil, "X_Forwarded_For: 10.0.0.1"),
		)

		DescribeTable("keeps the rules it had",
			func(ctx SpecContext, raw string, code int) {
				c := dialIMDS(ctx, pod)
				resp, _ := c.send(raw)
				Expect(resp.StatusCode).To(Equal(code))
				if code == http.StatusMethodNotAllowed {
					Expect(resp.Header.Get("Allow")).To(Equal("GET, HEAD"))
				}
				expectLegitimate(ctx, pod)
			},
			Entry("a dot-dot path", head("GET /openstack/../nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254"), 400),
			Entry("an encoded path", head("GET /nocloud%2fmeta-data HTTP/1.1", "Host: 169.254.169.254"), 400),
			Entry("a double slash", head("GET //nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254"), 400),
			Entry("a token PUT without a TTL", head("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 0"), 400),
			Entry("a token PUT with a TTL over 6 hours", head("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254",
				"X-aws-ec2-metadata-token-ttl-seconds: 21601", "Content-Length: 0"), 400),
			Entry("a token PUT through a proxy", head("PUT /latest/api/token HTTP/1.1", "Host: 169.254.169.254",
				"X-aws-ec2-metadata-token-ttl-seconds: 60", "X-Forwarded-For: 10.0.0.1", "Content-Length: 0"), 403),
			Entry("PUT elsewhere", head("PUT /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 0"), 405),
			Entry("a forged session token", head("GET /latest/meta-data/instance-id HTTP/1.1", "Host: 169.254.169.254",
				"X-aws-ec2-metadata-token: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 401),
			Entry("DELETE on /v1", head("DELETE /v1/identity HTTP/1.1", "Host: 169.254.169.254", "Metadata: true"), 405),
			Entry("the password POST", head("POST /openstack/latest/password HTTP/1.1", "Host: 169.254.169.254", "Content-Length: 3")+"abc", 409),
			Entry("a URI over 2 KiB", head("GET /latest/meta-data/"+strings.Repeat("a", 2100)+" HTTP/1.1", "Host: 169.254.169.254"), 414),
			Entry("/v1 without Metadata: true", head("GET /v1/token HTTP/1.1", "Host: 169.254.169.254"), 400),
			Entry("an unknown audience", head("GET /v1/token?audience=other HTTP/1.1", "Host: 169.254.169.254", "Metadata: true"), 404),
		)

		It("gives a kept-alive or pipelining client its own budget, which others never share", func(ctx SpecContext) {
			c := dialIMDS(ctx, pod)
			// 300 pipelined requests in one write: the first 100 (the
			// burst) are answered, the rest refused.
			_, err := io.WriteString(c, strings.Repeat(head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254"), 300))
			Expect(err).NotTo(HaveOccurred())
			codes := map[int]int{}
			for range 300 {
				resp, _ := c.response()
				codes[resp.StatusCode]++
				if resp.StatusCode == http.StatusTooManyRequests {
					Expect(resp.Header.Get("Retry-After")).To(Equal("1"))
				}
			}
			Expect(codes[http.StatusOK]).To(BeNumerically(">=", 100))
			Expect(codes[http.StatusTooManyRequests]).To(BeNumerically(">", 150))
			By("answering every new connection meanwhile")
			expectLegitimate(ctx, pod)
			resp, _ := c.send(head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254"))
			Expect(resp.StatusCode).To(Equal(http.StatusTooManyRequests), "the busy connection is still over its budget")
		})

		It("bounds long polls on their own: a thousand waiting leave the other requests alone", func(ctx SpecContext) {
			poll := head("GET /v1/identity?wait_for_change=true&timeout_sec=60 HTTP/1.1", "Host: 169.254.169.254", "Metadata: true")
			var conns []*rawConn
			for range 1000 {
				c := dialIMDS(ctx, pod)
				// A connection shed meanwhile fails here or when read.
				_, _ = io.WriteString(c, poll)
				conns = append(conns, c)
			}
			// Polls beyond the cap are answered at once with 429; the
			// connections beyond the connection cap are shed.
			var mu sync.Mutex
			var wg sync.WaitGroup
			refused, shed := 0, 0
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer GinkgoRecover()
					defer wg.Done()
					_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
					resp, err := http.ReadResponse(c.r, nil)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						Expect(resp.StatusCode).To(Equal(http.StatusTooManyRequests))
						Expect(resp.Header.Get("Retry-After")).To(Equal("5"))
						refused++
					case isTimeout(err):
						// Waiting.
					default:
						shed++
					}
				}()
			}
			wg.Wait()
			GinkgoWriter.Printf("1000 long polls: %d refused at once, %d connections shed, %d waiting\n", refused, shed, 1000-refused-shed)
			Expect(1000 - refused - shed).To(Equal(64))
			expectLegitimate(ctx, pod)
			Expect(refusedCounts(ctx, pod, "refused_requests_total")["long-polls"]).To(BeNumerically(">=", refused))
		})

		It("leaves a rate-limited info line and a counter for every reason", func(ctx SpecContext) {
			counts := refusedCounts(ctx, pod, "refused_requests_total")
			for _, reason := range []string{"framing", "malformed", "header-size", "version", "host", "proxy", "rate", "long-polls", "uri-size", "path", "method", "metadata"} {
				Expect(counts).To(HaveKeyWithValue(reason, BeNumerically(">", 0)), "no count for %s", reason)
				Expect(p.logs.String()).To(MatchRegexp(`"msg":"request refused"[^\n]*"reason":"`+reason+`"`), "no log line for %s", reason)
			}
			total := 0
			for _, n := range counts {
				total += n
			}
			lines := strings.Count(p.logs.String(), `"msg":"request refused"`)
			GinkgoWriter.Printf("%d refusals counted, %d logged\n", total, lines)
			Expect(lines).To(BeNumerically("<", total), "the log is rate-limited")
			By("counting the lines left out into the next line of their reason")
			proxied := head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254", "Via: 1.1 proxy")
			c := dialIMDS(ctx, pod)
			for range 20 {
				resp, _ := c.send(proxied)
				Expect(resp.StatusCode).To(Equal(http.StatusForbidden))
			}
			Eventually(func() string {
				resp, _ := c.send(proxied)
				Expect(resp.StatusCode).To(Equal(http.StatusForbidden))
				return p.logs.String()
			}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(100 * time.Millisecond).
				Should(MatchRegexp(`"reason":"proxy","status":403[^\n]*"suppressed":\d+`))
		})
	})

	Context("holding connections", func() {
		It("replaces connections that never finish their head, and answers a new one", func(ctx SpecContext) {
			start(ctx)
			closed, stop := attackers(ctx, pod, 2000, func(c net.Conn) error {
				_, err := io.WriteString(c, "GET /nocloud/meta-data HTTP/1.1\r\nX-Slow: ")
				return err
			})
			defer stop()
			Eventually(closed).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeNumerically(">", 2000))
			for range 10 {
				expectLegitimate(ctx, pod)
			}
			Expect(refusedCounts(ctx, pod, "shed_connections_total")).To(HaveKeyWithValue("incomplete", BeNumerically(">", 0)))
			Expect(p.logs.String()).To(MatchRegexp(`"msg":"connection shed"[^\n]*"reason":"incomplete"`))
			fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
			Expect(err).NotTo(HaveOccurred())
			Expect(len(fds)).To(BeNumerically("<", 256+64), "open files while 2,000 connections are held")
		})

		It("replaces idle kept-alive connections, and answers a new one", func(ctx SpecContext) {
			start(ctx)
			closed, stop := attackers(ctx, pod, 2000, func(c net.Conn) error {
				_, err := io.WriteString(c, head("GET /nocloud/meta-data HTTP/1.1", "Host: 169.254.169.254"))
				return err
			})
			defer stop()
			Eventually(closed).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeNumerically(">", 2000))
			for range 10 {
				expectLegitimate(ctx, pod)
			}
			Expect(refusedCounts(ctx, pod, "shed_connections_total")).To(HaveKeyWithValue("idle", BeNumerically(">", 0)))
		})

		It("replaces connections whose responses go unread", func(ctx SpecContext) {
			// A large user-data: a few unread responses fill the socket
			// buffers, and the sidecar's writes block. Sixteen such
			// connections against a cap of eight: eight stay, and stall.
			doc := storetest.Document()
			doc.UserData = []byte("#cloud-config\n# " + strings.Repeat("x", 256<<10) + "\n")
			pod = podnet.NewPod(GinkgoT())
			pod.Plumb(GinkgoT(), podnet.Masquerade)
			p = startSidecar(pod, writeDocument(doc), "--log-level", "info", "--token-dir", writeTokens(), "--max-connections", "8")
			expectServed(ctx, pod)
			many := strings.Repeat(head("GET /nocloud/user-data HTTP/1.1", "Host: 169.254.169.254"), 10)
			attack := func() {
				c, err := pod.Guest.Dial(ctx, "tcp4", imdsAddr)
				if err != nil {
					// Refused at the cap.
					return
				}
				DeferCleanup(c.Close)
				// Ends when the connection is closed, at the latest by the
				// cleanup.
				go func() {
					for {
						if _, err := io.WriteString(c, many); err != nil {
							return
						}
					}
				}()
			}
			for range 16 {
				attack()
			}
			// The cap full of them, each busy writing what is not read.
			Eventually(func() string {
				_, body, err := pod.AdminGet(ctx, "http://127.0.0.2:8081/metrics")
				Expect(err).NotTo(HaveOccurred())
				if !strings.Contains(body, "\nkubevirt_imds_sidecar_connections 8\n") {
					attack()
				}
				return body
			}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).
				Should(ContainSubstring("\nkubevirt_imds_sidecar_connections 8\n"))
			Eventually(func(g Gomega) {
				code, _, err := pod.GuestGet(ctx, metaURL)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(code).To(Equal(http.StatusOK))
				g.Expect(refusedCounts(ctx, pod, "shed_connections_total")).To(HaveKey("stalled"))
			}).WithContext(ctx).WithTimeout(20*time.Second).WithPolling(200*time.Millisecond).Should(Succeed(),
				"a new connection replaced one whose responses went unread")
			expectLegitimate(ctx, pod)
		})

		It("closes a connection that does not finish its head within 5 s", func(ctx SpecContext) {
			start(ctx)
			c := dialIMDS(ctx, pod)
			_, err := io.WriteString(c, "GET /nocloud/meta-data HTTP/1.1\r\n")
			Expect(err).NotTo(HaveOccurred())
			began := time.Now()
			// One byte every second keeps no deadline alive.
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for range tick.C {
				if _, err := io.WriteString(c, "X"); err != nil || time.Since(began) > 10*time.Second {
					break
				}
			}
			c.expectClosed()
			Expect(time.Since(began)).To(BeNumerically("<", 8*time.Second))
		})
	})
})

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
