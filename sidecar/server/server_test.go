package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vmetrics "github.com/VictoriaMetrics/metrics"
	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/promtext"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

// env is a server over a real payload directory in kubelet's layout.
type env struct {
	dir    *storetest.Dir
	tokens string
	store  *store.Store
	srv    *Server
	set    *vmetrics.Set
}

// tokenExpiry is the exp claim of the test tokens.
var tokenExpiry = time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)

// newEnv loads doc (nil: none) into a fresh store and server. cfg may adjust
// the config before New.
func newEnv(t testing.TB, doc *payload.Document, cfg func(*Config)) *env {
	t.Helper()
	root := t.TempDir()
	dir, err := storetest.NewDir(filepath.Join(root, "payload"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, tokens: filepath.Join(root, "tokens"), set: vmetrics.NewSet()}
	if doc != nil {
		for _, tok := range doc.Tokens {
			if tok.Audience == "unwritten" || tok.Audience == "escape" {
				continue
			}
			if err := storetest.WriteToken(e.tokens, tok.Audience, storetest.JWT(tok.Audience, tokenExpiry)); err != nil {
				t.Fatal(err)
			}
		}
		if err := dir.WriteDocument(doc); err != nil {
			t.Fatal(err)
		}
	}
	e.store = store.New(store.Options{PayloadDir: dir.Path, TokenDir: e.tokens}, logr.Discard())
	if doc != nil {
		if _, err := e.store.Load(); err != nil {
			t.Fatal(err)
		}
	}
	c := Config{Store: e.store, Metrics: e.set, Log: logr.Discard(), Burst: 1 << 20, RateLimit: 1e6}
	if cfg != nil {
		cfg(&c)
	}
	e.srv, err = New(c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// update writes doc and loads it synchronously.
func (e *env) update(t testing.TB, doc *payload.Document) {
	t.Helper()
	if err := e.dir.WriteDocument(doc); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Load(); err != nil {
		t.Fatal(err)
	}
}

func do(h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.Host = Address
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

var md = []string{"Metadata", "true"}

func TestRoutes(t *testing.T) {
	doc := storetest.Document()
	e := newEnv(t, doc, nil)
	h := e.srv.Handler()
	id := doc.Instance.ID

	type tc struct {
		path   string
		hdr    []string
		code   int
		ctype  string
		body   string // exact, unless contains is set
		substr string
	}
	tests := []tc{
		// NoCloud
		{path: "/nocloud/meta-data", code: 200, ctype: contentYAML, substr: "instance-id: " + id},
		{path: "/nocloud/user-data", code: 200, body: string(doc.UserData)},
		{path: "/nocloud/vendor-data", code: 200, body: string(doc.VendorData)},
		{path: "/nocloud/network-config", code: 200, substr: "version: 2"},
		{path: "/nocloud/", code: 200, body: "meta-data\nnetwork-config\nuser-data\nvendor-data"},
		{path: "/nocloud", code: 200, body: "meta-data\nnetwork-config\nuser-data\nvendor-data"},
		{path: "/nocloud/meta-data/", code: 404},
		{path: "/nocloud/unknown", code: 404},
		// OpenStack
		{path: "/openstack", code: 200, body: strings.Join(OpenStackVersions, "\n")},
		{path: "/openstack/", code: 200, body: strings.Join(OpenStackVersions, "\n")},
		{path: "/openstack/latest/", code: 200, body: "meta_data.json\nnetwork_data.json\npassword\nuser_data\nvendor_data.json\nvendor_data2.json"},
		{path: "/openstack/latest", code: 200, substr: "meta_data.json"},
		{path: "/openstack/2012-08-10/", code: 200, body: "meta_data.json\nuser_data"},
		{path: "/openstack/latest/meta_data.json", code: 200, ctype: contentJSON, substr: `"uuid":"` + id + `"`},
		{path: "/openstack/2013-04-04/meta_data.json", code: 200, substr: `"uuid":"` + id + `"`},
		{path: "/openstack/2013-04-04/password", code: 200, body: ""},
		{path: "/openstack/2012-08-10/password", code: 404},
		{path: "/openstack/2012-08-10/network_data.json", code: 404},
		{path: "/openstack/2018-08-27/network_data.json", code: 200, substr: `"ipv4_dhcp"`},
		{path: "/openstack/latest/user_data", code: 200, body: string(doc.UserData)},
		{path: "/openstack/latest/vendor_data.json", code: 200, substr: `"cloud-init":`},
		{path: "/openstack/latest/vendor_data2.json", code: 200, body: "{}"},
		{path: "/openstack/2099-01-01/meta_data.json", code: 404},
		{path: "/openstack/latest/meta_data.json/", code: 404},
		// EC2 subset
		{path: "/", code: 200, body: "2009-04-04\nlatest"},
		// EC2 lists a version's categories without trailing slashes.
		{path: "/latest/", code: 200, body: "meta-data\nuser-data"},
		{path: "/2009-04-04", code: 200, body: "meta-data\nuser-data"},
		{path: "/latest/meta-data/", code: 200, body: "ami-launch-index\nhostname\ninstance-id\nlocal-hostname\nmac\nnetwork/\nplacement/\npublic-keys/"},
		{path: "/latest/meta-data/mac", code: 200, body: "52:54:00:12:34:56"},
		{path: "/latest/meta-data/network/interfaces/macs/", code: 200, body: "52:54:00:12:34:56/\n52:54:00:ab:cd:ef/"},
		{path: "/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/device-number", code: 200, body: "0"},
		{path: "/latest/meta-data/placement/region", code: 200, body: "kubevirt"},
		{path: "/latest/meta-data/placement/region/", code: 200, body: "kubevirt"},
		{path: "/2009-04-04/meta-data", code: 200, substr: "instance-id"},
		{path: "/latest/meta-data/instance-id", code: 200, body: id},
		{path: "/2009-04-04/meta-data/local-hostname", code: 200, body: "vm1"},
		{path: "/2009-04-04/meta-data/placement/availability-zone", code: 200, body: "kubevirt"},
		{path: "/2009-04-04/meta-data/public-keys", code: 200, body: "0=key-0"},
		{path: "/2009-04-04/meta-data/public-keys/0/", code: 200, body: "openssh-key"},
		{path: "/2009-04-04/meta-data/public-keys/0/openssh-key", code: 200, body: doc.Instance.SSHAuthorizedKeys[0]},
		{path: "/latest/user-data", code: 200, body: string(doc.UserData)},
		{path: "/latest/meta-data/instance-id/", code: 200, body: id},
		{path: "/latest/dynamic/instance-identity/document", code: 404},
		{path: "/2016-09-02/meta-data/instance-id", code: 404},
		// v1
		{path: "/v1/identity", hdr: md, code: 200, ctype: contentJSON, substr: `"instanceId":"` + id + `"`},
		{path: "/v1/identity", code: 400, ctype: contentJSON, substr: `"code":400`},
		{path: "/v1/identity", hdr: []string{"Metadata", "false"}, code: 400},
		{path: "/v1/metadata", hdr: md, code: 200, substr: `"namespace":"tenant-a"`},
		{path: "/v1/user-data", hdr: md, code: 200, ctype: contentBinary, body: string(doc.UserData)},
		{path: "/v1/vendor-data", hdr: md, code: 200, body: string(doc.VendorData)},
		{path: "/v1/network-config", hdr: md, code: 200, ctype: contentJSON, substr: `"interfaces":[`},
		{path: "/v1/network-config?format=json", hdr: md, code: 200, ctype: contentJSON, substr: `"macAddress":"52:54:00:12:34:56"`},
		{path: "/v1/network-config?format=v2", hdr: md, code: 200, ctype: contentYAML, substr: "version: 2"},
		{path: "/v1/network-config?format=v1", hdr: md, code: 200, ctype: contentYAML, substr: "version: 1"},
		{path: "/v1/network-config?format=eni", hdr: md, code: 200, ctype: contentText, substr: "iface eth0 inet dhcp"},
		{path: "/v1/network-config?format=xml", hdr: md, code: 400},
		{path: "/v1/token", hdr: md, code: 200, substr: `"audience":"vault"`},
		{path: "/v1/token?audience=vault", hdr: md, code: 200, substr: `"expirationTimestamp":"2026-11-27T15:00:00Z"`},
		{path: "/v1/token?audience=other", hdr: md, code: 404},
		{path: "/v1/", hdr: md, code: 200, body: strings.Join(v1Endpoints, "\n")},
		{path: "/v1", hdr: md, code: 200, body: strings.Join(v1Endpoints, "\n")},
		{path: "/v1/nope", hdr: md, code: 404, ctype: contentJSON},
		{path: "/v1/identity?wait_for_change=maybe", hdr: md, code: 400},
		{path: "/v1/identity?wait_for_change=true&timeout_sec=0", hdr: md, code: 400},
		{path: "/v1/identity?wait_for_change=true&timeout_sec=x", hdr: md, code: 400},
		// Elsewhere
		{path: "/foo", code: 404},
		{path: "/v2/identity", code: 404},
		{path: "/latest/api/token", code: 405},
	}
	for _, tt := range tests {
		name := tt.path
		if len(tt.hdr) > 0 {
			name += " " + strings.Join(tt.hdr, ":")
		}
		t.Run(name, func(t *testing.T) {
			w := do(h, http.MethodGet, tt.path, tt.hdr...)
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d; body %q", w.Code, tt.code, w.Body)
			}
			if tt.ctype != "" && w.Header().Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type %q, want %q", w.Header().Get("Content-Type"), tt.ctype)
			}
			switch {
			case tt.substr != "":
				if !strings.Contains(w.Body.String(), tt.substr) {
					t.Errorf("body %q does not contain %q", w.Body, tt.substr)
				}
			case tt.code == 200 && w.Body.String() != tt.body:
				t.Errorf("body %q, want %q", w.Body, tt.body)
			}
			if tt.code == 200 && w.Header().Get("ETag") == "" {
				t.Error("200 without ETag")
			}
			if tt.code >= 400 && strings.HasPrefix(tt.path, "/v1") {
				var e errorBody
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code != tt.code || e.Error.Message == "" {
					t.Errorf("error body %q is not the JSON error shape", w.Body)
				}
			}
		})
	}
}

func TestScreening(t *testing.T) {
	e := newEnv(t, storetest.Document(), nil)
	h := e.srv.Handler()
	long := "/latest/meta-data/" + strings.Repeat("a", maxURIBytes)
	tests := []struct {
		name, method, path string
		hdr                []string
		code               int
	}{
		{"xff nocloud", "GET", "/nocloud/meta-data", []string{"X-Forwarded-For", "10.0.0.1"}, 403},
		{"xff openstack", "GET", "/openstack/latest/meta_data.json", []string{"X-Forwarded-For", "10.0.0.1"}, 403},
		{"xff ec2", "GET", "/latest/meta-data/instance-id", []string{"X-Forwarded-For", ""}, 403},
		{"xff v1", "GET", "/v1/identity", []string{"Metadata", "true", "X-Forwarded-For", "10.0.0.1"}, 403},
		{"xff unknown", "GET", "/nope", []string{"X-Forwarded-For", "10.0.0.1"}, 403},
		{"forwarded", "GET", "/nocloud/meta-data", []string{"Forwarded", "for=10.0.0.1"}, 403},
		{"via", "GET", "/openstack/latest/meta_data.json", []string{"Via", "1.1 squid"}, 403},
		{"x-real-ip", "GET", "/latest/meta-data/instance-id", []string{"X-Real-IP", "10.0.0.1"}, 403},
		{"x-forwarded-host", "GET", "/v1/token", []string{"Metadata", "true", "X-Forwarded-Host", "a"}, 403},
		{"x-forwarded-proto", "GET", "/v1/identity", []string{"Metadata", "true", "X-Forwarded-Proto", "http"}, 403},
		{"underscore spelling", "GET", "/v1/token", []string{"Metadata", "true", "X_Forwarded_For", "10.0.0.1"}, 403},
		{"true-client-ip", "GET", "/nocloud/user-data", []string{"True-Client-IP", "10.0.0.1"}, 403},
		{"post", "POST", "/nocloud/meta-data", nil, 405},
		{"put token", "PUT", "/latest/api/token", []string{"X-aws-ec2-metadata-token-ttl-seconds", "60"}, 200},
		{"put token xff", "PUT", "/latest/api/token", []string{"X-aws-ec2-metadata-token-ttl-seconds", "60", "X-Forwarded-For", "10.0.0.1"}, 403},
		{"put elsewhere", "PUT", "/latest/meta-data/instance-id", []string{"X-aws-ec2-metadata-token-ttl-seconds", "60"}, 405},
		{"post password", "POST", "/openstack/latest/password", nil, 409},
		{"post password 2013", "POST", "/openstack/2013-04-04/password", nil, 409},
		{"post password too old", "POST", "/openstack/2012-08-10/password", nil, 404},
		{"put password", "PUT", "/openstack/latest/password", nil, 405},
		{"post elsewhere", "POST", "/openstack/latest/meta_data.json", nil, 405},
		{"delete v1", "DELETE", "/v1/identity", md, 405},
		{"options", "OPTIONS", "/", nil, 405},
		{"uri too long", "GET", long, nil, 414},
		{"double slash", "GET", "/nocloud//meta-data", nil, 400},
		{"leading double slash", "GET", "//nocloud/meta-data", nil, 400},
		{"dot", "GET", "/nocloud/./meta-data", nil, 400},
		{"dotdot", "GET", "/openstack/../nocloud/meta-data", nil, 400},
		{"trailing dot", "GET", "/nocloud/meta-data/.", nil, 400},
		{"encoded dots", "GET", "/%2e%2e/nocloud/meta-data", nil, 400},
		{"encoded dot segment", "GET", "/nocloud/%2e/meta-data", nil, 400},
		{"encoded slash", "GET", "/nocloud%2fmeta-data", nil, 400},
		{"encoded backslash", "GET", "/nocloud%5cmeta-data", nil, 400},
		{"backslash", "GET", "/nocloud\\meta-data", nil, 400},
		{"encoded letter", "GET", "/nocloud/%6deta-data", nil, 400},
		{"nul", "GET", "/nocloud/meta-data%00", nil, 400},
		{"v1 dotdot", "GET", "/v1/../v1/identity", md, 400},
		{"non-ascii", "GET", "/nocloud/m\u00e9ta-data", nil, 400},
		{"head ok", "HEAD", "/nocloud/meta-data", nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(h, tt.method, tt.path, tt.hdr...)
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d; body %q", w.Code, tt.code, w.Body)
			}
			if (tt.code == 405 || tt.code == 409) && w.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q", w.Header().Get("Allow"))
			}
			if strings.HasPrefix(tt.path, "/v1") && w.Header().Get("Content-Type") != contentJSON {
				t.Errorf("v1 error is %q, not JSON", w.Header().Get("Content-Type"))
			}
		})
	}
}

func TestHead(t *testing.T) {
	e := newEnv(t, storetest.Document(), nil)
	get := do(e.srv.Handler(), "GET", "/nocloud/meta-data")
	head := do(e.srv.Handler(), "HEAD", "/nocloud/meta-data")
	if head.Code != 200 || head.Body.Len() != 0 {
		t.Fatalf("HEAD: %d, %d body bytes", head.Code, head.Body.Len())
	}
	if head.Header().Get("Content-Length") != get.Header().Get("Content-Length") || head.Header().Get("ETag") != get.Header().Get("ETag") {
		t.Fatalf("HEAD headers differ from GET: %v vs %v", head.Header(), get.Header())
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, storetest.Document(), func(c *Config) { c.RateLimit, c.Burst = 0.5, 3 })
	base := serve(t, e)
	c := newRawConn(t, base)
	for i := 0; i < 3; i++ {
		if code, _ := c.roundTrip(t, "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"); code != 200 {
			t.Fatalf("request %d within the burst: %d", i, code)
		}
	}
	code, resp := c.roundTrip(t, "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
	if code != 429 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("over the burst: %d, Retry-After %q", code, resp.Header.Get("Retry-After"))
	}
	if code, resp := c.roundTrip(t, "GET /v1/identity HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"); code != 429 || resp.Header.Get("Content-Type") != contentJSON {
		t.Fatalf("v1 over the burst: %d %q", code, resp.Header.Get("Content-Type"))
	}
	// The budget is the connection's: another connection has its own.
	other := newRawConn(t, base)
	if code, _ := other.roundTrip(t, "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"); code != 200 {
		t.Fatalf("another connection: %d", code)
	}
	if got := counter(t, e, "kubevirt_imds_sidecar_refused_requests_total", "reason", "rate"); got != 2 {
		t.Fatalf("refused for rate: %v", got)
	}
}

func TestDefaults(t *testing.T) {
	e := newEnv(t, storetest.Document(), func(c *Config) { c.RateLimit, c.Burst = 0, 0 })
	if e.srv.burst != DefaultBurst || float64(e.srv.rateLimit) != DefaultRateLimit ||
		e.srv.conns.max != DefaultMaxConns || e.srv.maxLongPolls != DefaultMaxLongPolls {
		t.Fatalf("limits %v/%d, %d connections, %d long polls", e.srv.rateLimit, e.srv.burst, e.srv.conns.max, e.srv.maxLongPolls)
	}
	base := serve(t, e)
	c := newRawConn(t, base)
	// A full OpenStack boot (twice, as cloud-init's two stages may) and a
	// NoCloud boot back to back stay inside the default burst.
	crawl := []string{"/openstack", "/openstack/2018-08-27/meta_data.json", "/openstack/2018-08-27/user_data",
		"/openstack/2018-08-27/vendor_data.json", "/openstack/2018-08-27/vendor_data2.json", "/openstack/2018-08-27/network_data.json",
		"/latest/meta-data/", "/latest/meta-data/ami-launch-index", "/latest/meta-data/hostname", "/latest/meta-data/instance-id",
		"/latest/meta-data/local-hostname", "/latest/meta-data/placement/", "/latest/meta-data/placement/availability-zone",
		"/latest/meta-data/public-keys/", "/latest/meta-data/public-keys/0/", "/latest/meta-data/public-keys/0/openssh-key", "/latest/user-data"}
	crawl = append(append(crawl, crawl...), "/nocloud/network-config", "/nocloud/meta-data", "/nocloud/user-data", "/nocloud/vendor-data")
	// On one kept-alive connection, the worst case for its budget.
	for _, p := range crawl {
		if code, _ := c.roundTrip(t, "GET "+p+" HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"); code != 200 {
			t.Fatalf("%s: %d", p, code)
		}
	}
	for _, bad := range []Config{{}, {Store: e.store, RateLimit: -1}, {Store: e.store, Burst: -1},
		{Store: e.store, MaxConns: -1}, {Store: e.store, MaxLongPolls: -1}, {Store: e.store, Hosts: []string{"a b"}}} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

func TestUnloaded(t *testing.T) {
	e := newEnv(t, nil, nil)
	h := e.srv.Handler()
	for _, tt := range []struct {
		path string
		hdr  []string
		code int
		json bool
	}{
		{"/v1/identity", md, 503, true},
		{"/v1/token", md, 503, true},
		{"/nocloud/meta-data", nil, 503, false},
		{"/openstack/latest/meta_data.json", nil, 503, false},
		{"/latest/meta-data/instance-id", nil, 503, false},
		{"/", nil, 503, false},
		{"/foo", nil, 404, false},
	} {
		w := do(h, "GET", tt.path, tt.hdr...)
		if w.Code != tt.code {
			t.Errorf("%s: %d, want %d", tt.path, w.Code, tt.code)
		}
		if tt.code == 503 && w.Header().Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", tt.path)
		}
		if isJSON := w.Header().Get("Content-Type") == contentJSON; isJSON != tt.json {
			t.Errorf("%s: Content-Type %q", tt.path, w.Header().Get("Content-Type"))
		}
	}
	// The first document makes everything available.
	e.update(t, storetest.Document())
	if w := do(h, "GET", "/nocloud/meta-data"); w.Code != 200 {
		t.Fatalf("after load: %d", w.Code)
	}
}

func TestDialectsDisabled(t *testing.T) {
	doc := storetest.Document()
	doc.Dialects = []payload.Dialect{payload.DialectNoCloud}
	e := newEnv(t, doc, nil)
	h := e.srv.Handler()
	for path, code := range map[string]int{
		"/nocloud/meta-data":               200,
		"/openstack":                       404,
		"/openstack/latest/meta_data.json": 404,
		"/":                                404,
		"/latest/meta-data/instance-id":    404,
		"/v1/identity":                     404,
	} {
		if w := do(h, "GET", path, md...); w.Code != code {
			t.Errorf("%s: %d, want %d", path, w.Code, code)
		}
	}
	doc.Dialects = []payload.Dialect{payload.DialectV1}
	e.update(t, doc)
	if w := do(h, "GET", "/nocloud/meta-data"); w.Code != 404 {
		t.Errorf("nocloud after disabling: %d", w.Code)
	}
	if w := do(h, "GET", "/v1/identity", md...); w.Code != 200 {
		t.Errorf("v1 after enabling: %d", w.Code)
	}
}

func TestAbsentData(t *testing.T) {
	doc := storetest.Document()
	doc.UserData, doc.VendorData, doc.Network, doc.Tokens = nil, nil, nil, nil
	e := newEnv(t, doc, nil)
	h := e.srv.Handler()
	for _, tt := range []struct {
		path string
		code int
		body string
	}{
		{"/nocloud/user-data", 200, ""},      // cloud-init fails NoCloud on a user-data error
		{"/nocloud/vendor-data", 200, ""},    // cloud-init retries an error for 10 s
		{"/nocloud/network-config", 200, ""}, // likewise
		{"/nocloud/", 200, "meta-data\nnetwork-config\nuser-data\nvendor-data"},
		{"/openstack/latest/user_data", 404, ""},
		{"/openstack/latest/", 200, "meta_data.json\nnetwork_data.json\npassword\nvendor_data.json\nvendor_data2.json"},
		{"/openstack/latest/network_data.json", 200, `{"links":[],"networks":[],"services":[]}`},
		{"/openstack/latest/vendor_data.json", 200, `{}`},
		{"/latest/user-data", 404, ""},
		{"/latest/", 200, "meta-data"},
		{"/v1/user-data", 404, ""},
		{"/v1/vendor-data", 404, ""},
		{"/v1/network-config", 404, ""},
		{"/v1/token", 404, ""},
	} {
		w := do(h, "GET", tt.path, md...)
		if w.Code != tt.code || (tt.code == 200 && w.Body.String() != tt.body) {
			t.Errorf("%s: %d %q, want %d %q", tt.path, w.Code, w.Body, tt.code, tt.body)
		}
	}
}

func TestToken(t *testing.T) {
	doc := storetest.Document()
	doc.Tokens = []payload.Token{
		{Audience: "vault", Path: payload.TokenPath("vault")},
		{Audience: "sts.example.com", Path: payload.TokenPath("sts.example.com")},
		{Audience: "unwritten", Path: payload.TokenPath("unwritten")},
		{Audience: "escape", Path: "../payload/payload.json"},
	}
	e := newEnv(t, doc, nil)
	h := e.srv.Handler()

	w := do(h, "GET", "/v1/token", md...)
	if w.Code != 400 || !strings.Contains(w.Body.String(), `\"vault\", \"sts.example.com\", \"unwritten\"`) {
		t.Fatalf("several audiences, none chosen: %d %s", w.Code, w.Body)
	}
	w = do(h, "GET", "/v1/token?audience=sts.example.com", md...)
	var tok tokenBody
	if err := json.Unmarshal(w.Body.Bytes(), &tok); err != nil || w.Code != 200 {
		t.Fatalf("token: %d %s %v", w.Code, w.Body, err)
	}
	if tok.Audience != "sts.example.com" || tok.Token != string(storetest.JWT("sts.example.com", tokenExpiry)) || tok.ExpirationTimestamp != "2026-11-27T15:00:00Z" {
		t.Fatalf("token body %+v", tok)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("token response is cacheable")
	}
	if w := do(h, "GET", "/v1/token?audience=unwritten", md...); w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Errorf("unwritten token file: %d", w.Code)
	}

	if w := do(h, "GET", "/v1/token?audience=escape", md...); w.Code != 500 || strings.Contains(w.Body.String(), "apiVersion") {
		t.Errorf("token path leaving the token directory: %d %s", w.Code, w.Body)
	}

	// Rotation: the next request reads the new file.
	oldETag := w.Header().Get("ETag")
	rotated := storetest.JWT("sts.example.com", tokenExpiry.Add(time.Hour))
	if err := storetest.WriteToken(e.tokens, "sts.example.com", rotated); err != nil {
		t.Fatal(err)
	}
	w = do(h, "GET", "/v1/token?audience=sts.example.com", md...)
	if !strings.Contains(w.Body.String(), `"expirationTimestamp":"2026-11-27T16:00:00Z"`) || w.Header().Get("ETag") == oldETag {
		t.Fatalf("rotated token not served: %s", w.Body)
	}

	// A token that is not a JWT is served without an expiry.
	if err := storetest.WriteToken(e.tokens, "vault", []byte("opaque")); err != nil {
		t.Fatal(err)
	}
	w = do(h, "GET", "/v1/token?audience=vault", md...)
	if w.Code != 200 || strings.Contains(w.Body.String(), "expirationTimestamp") {
		t.Fatalf("opaque token: %d %s", w.Code, w.Body)
	}
}

func TestJWTExpiry(t *testing.T) {
	for tok, want := range map[string]bool{
		string(storetest.JWT("a", tokenExpiry)): true,
		"a.b":                                   false,
		"a.!!!.c":                               false,
		"a.e30.c":                               false, // {}
		"a.eyJleHAiOiJ4In0.c":                   false, // {"exp":"x"}
		"a.eyJleHAiOi0xfQ.c":                    false, // {"exp":-1}
	} {
		if _, ok := jwtExpiry([]byte(tok)); ok != want {
			t.Errorf("jwtExpiry(%q) ok=%v, want %v", tok, ok, want)
		}
	}
}

// TestETags: every 200 carries an ETag derived from content only (a second
// server over the same files agrees), If-None-Match gives 304, and a change
// of content changes it.
func TestETags(t *testing.T) {
	doc := storetest.Document()
	e := newEnv(t, doc, nil)
	s2, err := New(Config{Store: store.New(store.Options{PayloadDir: e.dir.Path, TokenDir: e.tokens}, logr.Discard()), Burst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.store.Load(); err != nil {
		t.Fatal(err)
	}
	sn := e.srv.current()
	paths := []string{"/v1/token", "/v1/network-config?format=v2"}
	for p := range sn.files {
		paths = append(paths, p)
	}
	for _, p := range paths {
		a := do(e.srv.Handler(), "GET", p, md...)
		b := do(s2.Handler(), "GET", p, md...)
		if a.Code != 200 || a.Header().Get("ETag") == "" || a.Header().Get("ETag") != b.Header().Get("ETag") {
			t.Errorf("%s: %d, ETags %q and %q", p, a.Code, a.Header().Get("ETag"), b.Header().Get("ETag"))
			continue
		}
		etag := a.Header().Get("ETag")
		for _, inm := range []string{etag, "W/" + etag, `"x", ` + etag, "*"} {
			if w := do(e.srv.Handler(), "GET", p, "Metadata", "true", "If-None-Match", inm); w.Code != 304 || w.Body.Len() != 0 || w.Header().Get("ETag") != etag {
				t.Errorf("%s If-None-Match %s: %d", p, inm, w.Code)
			}
		}
		if w := do(e.srv.Handler(), "GET", p, "Metadata", "true", "If-None-Match", `"other"`); w.Code != 200 {
			t.Errorf("%s with a stale If-None-Match: %d", p, w.Code)
		}
	}
	before := do(e.srv.Handler(), "GET", "/nocloud/meta-data").Header().Get("ETag")
	doc.Instance.Hostname = "changed"
	e.update(t, doc)
	if after := do(e.srv.Handler(), "GET", "/nocloud/meta-data").Header().Get("ETag"); after == before {
		t.Error("ETag unchanged after a content change")
	}
}

func longPoll(h http.Handler, ctx context.Context, target string) chan *httptest.ResponseRecorder {
	out := make(chan *httptest.ResponseRecorder, 1)
	r := httptest.NewRequest("GET", target, nil).WithContext(ctx)
	r.Host = Address
	r.Header.Set("Metadata", "true")
	go func() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		out <- w
	}()
	return out
}

func recv(t *testing.T, ch chan *httptest.ResponseRecorder, d time.Duration) *httptest.ResponseRecorder {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case w := <-ch:
		return w
	case <-timer.C:
		t.Fatalf("no answer within %v", d)
		return nil
	}
}

// notYet asserts that ch has not answered: it checks right after a
// round-trip through the store, which the waiting handler does not need.
func notYet(t *testing.T, ch chan *httptest.ResponseRecorder) {
	t.Helper()
	select {
	case w := <-ch:
		t.Fatalf("long poll answered early: %d %s", w.Code, w.Body)
	default:
	}
}

// waitPolling waits until n long polls are parked in s.
func waitPolling(t *testing.T, s *Server, n int64) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(5 * time.Second); s.polling.Load() != n; <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("%d long polls parked, want %d", s.polling.Load(), n)
		}
	}
}

func TestLongPoll(t *testing.T) {
	doc := storetest.Document()
	e := newEnv(t, doc, nil)
	h := e.srv.Handler()
	cur := do(h, "GET", "/v1/identity", md...)
	etag := cur.Header().Get("ETag")

	t.Run("differs", func(t *testing.T) {
		w := recv(t, longPoll(h, context.Background(), `/v1/identity?wait_for_change=true&last_etag="old"`), time.Second)
		if w.Code != 200 || w.Header().Get("ETag") != etag {
			t.Fatalf("%d %q", w.Code, w.Header().Get("ETag"))
		}
	})
	t.Run("change", func(t *testing.T) {
		ch := longPoll(h, context.Background(), "/v1/identity?wait_for_change=true&last_etag="+etag)
		notYet(t, ch)
		// A change elsewhere in the document does not answer the poll.
		changed := e.store.Changed()
		doc.UserData = []byte("#cloud-config\n")
		e.update(t, doc)
		<-changed
		notYet(t, ch)
		doc.Instance.Hostname = "renamed"
		e.update(t, doc)
		w := recv(t, ch, 2*time.Second)
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"hostname":"renamed"`) {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		etag = w.Header().Get("ETag")
	})
	t.Run("no last_etag waits for the next change", func(t *testing.T) {
		ch := longPoll(h, context.Background(), "/v1/metadata?wait_for_change=true")
		// Without last_etag the poll compares with what it saw first, so
		// the change must come after it is parked.
		waitPolling(t, e.srv, 1)
		doc.Instance.Tags = map[string]string{"k": "v"}
		e.update(t, doc)
		if w := recv(t, ch, 2*time.Second); !strings.Contains(w.Body.String(), `"k":"v"`) {
			t.Fatalf("%s", w.Body)
		}
	})
	t.Run("unquoted last_etag", func(t *testing.T) {
		ch := longPoll(h, context.Background(), "/v1/identity?wait_for_change=true&timeout_sec=1&last_etag="+strings.Trim(etag, `"`))
		notYet(t, ch)
		if w := recv(t, ch, 3*time.Second); w.Code != 200 {
			t.Fatalf("%d", w.Code)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		w := recv(t, longPoll(h, context.Background(), "/v1/identity?wait_for_change=true&timeout_sec=1&last_etag="+etag), 3*time.Second)
		if w.Code != 200 || w.Header().Get("ETag") != etag || time.Since(start) < time.Second {
			t.Fatalf("%d after %v", w.Code, time.Since(start))
		}
	})
	t.Run("client gone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		ch := longPoll(h, ctx, "/v1/identity?wait_for_change=true&last_etag="+etag)
		cancel()
		if w := recv(t, ch, 2*time.Second); w.Body.Len() != 0 {
			t.Fatalf("wrote %q to a gone client", w.Body)
		}
	})
	t.Run("stopping", func(t *testing.T) {
		e2 := newEnv(t, storetest.Document(), nil)
		ch := longPoll(e2.srv.Handler(), context.Background(), "/v1/identity?wait_for_change=true")
		notYet(t, ch)
		e2.srv.stopOnce.Do(func() { close(e2.srv.stopping) })
		if w := recv(t, ch, 2*time.Second); w.Code != 200 {
			t.Fatalf("%d", w.Code)
		}
	})
	t.Run("token", func(t *testing.T) {
		w := recv(t, longPoll(h, context.Background(), "/v1/token?wait_for_change=true&timeout_sec=1"), 3*time.Second)
		if w.Code != 200 {
			t.Fatalf("%d", w.Code)
		}
	})
}

// TestServe runs the real http.Server: timeouts, header cap, a long poll
// outliving the read timeout, and graceful shutdown ending a poll.
func TestServe(t *testing.T) {
	e := newEnv(t, storetest.Document(), nil)
	e.srv.readTimeout, e.srv.writeTimeout = 300*time.Millisecond, 300*time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Timeout: 10 * time.Second}

	get := func(path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = Address
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := get("/nocloud/meta-data"); resp.StatusCode != 200 || !strings.Contains(body, "instance-id") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if resp, _ := get("/nocloud/meta-data", "X-Big", strings.Repeat("x", 2*maxHeaderBytes)); resp.StatusCode != 431 {
		t.Fatalf("oversized header: %d", resp.StatusCode)
	}
	// The poll outlives the 300 ms read and write timeouts.
	start := time.Now()
	if resp, _ := get("/v1/identity?wait_for_change=true&timeout_sec=1", md...); resp.StatusCode != 200 || time.Since(start) < time.Second {
		t.Fatalf("long poll over the real server: %d after %v", resp.StatusCode, time.Since(start))
	}

	// Shutdown answers a pending poll and Serve returns nil.
	polled := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", base+"/v1/identity?wait_for_change=true", nil)
		req.Host = Address
		req.Header.Set("Metadata", "true")
		resp, err := client.Do(req)
		if err != nil {
			polled <- 0
			return
		}
		resp.Body.Close()
		polled <- resp.StatusCode
	}()
	waitPolling(t, e.srv, 1)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if code := <-polled; code != 200 && code != 0 {
		t.Fatalf("poll during shutdown: %d", code)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, storetest.Document(), nil)
	h := e.srv.Handler()
	do(h, "GET", "/nocloud/meta-data")
	do(h, "GET", "/nocloud/nope")
	do(h, "GET", "/v1/identity", md...)
	do(h, "GET", "/elsewhere")
	mfs := gather(t, e)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = value(m)
		}
	}
	for key, want := range map[string]float64{
		"kubevirt_imds_sidecar_requests_total,code=200,dialect=nocloud":    1,
		"kubevirt_imds_sidecar_requests_total,code=404,dialect=nocloud":    1,
		"kubevirt_imds_sidecar_requests_total,code=200,dialect=v1":         1,
		"kubevirt_imds_sidecar_requests_total,code=404,dialect=none":       1,
		"kubevirt_imds_sidecar_payload_reloads_total,result=loaded":        1,
		"kubevirt_imds_sidecar_payload_reloads_total,result=failed":        0,
		"kubevirt_imds_sidecar_payload_loaded":                             1,
		"kubevirt_imds_sidecar_request_duration_seconds,dialect=nocloud":   2,
		"kubevirt_imds_sidecar_request_duration_seconds,dialect=openstack": -1,
	} {
		v, ok := got[key]
		if want < 0 {
			if ok {
				t.Errorf("%s present", key)
			}
			continue
		}
		if !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	// A second server on the same set is refused.
	if _, err := New(Config{Store: e.store, Metrics: e.set}); err == nil {
		t.Error("duplicate registration accepted")
	}
}

// gather parses e's series as /metrics writes them.
func gather(t *testing.T, e *env) map[string]*dto.MetricFamily {
	t.Helper()
	var b strings.Builder
	if err := promtext.Write(&b, e.set, MetricFamilies()); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("parsing the series: %v\n%s", err, b.String())
	}
	return mfs
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// TestNoCloudYAML checks what cloud-init parses: the served meta-data and
// network-config are YAML mappings with the keys it reads.
func TestNoCloudYAML(t *testing.T) {
	e := newEnv(t, storetest.Document(), nil)
	var m map[string]any
	if err := yaml.Unmarshal(do(e.srv.Handler(), "GET", "/nocloud/meta-data").Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"instance-id", "local-hostname", "public-keys", "network-interfaces"} {
		if _, ok := m[k]; !ok {
			t.Errorf("meta-data lacks %s", k)
		}
	}
}

// TestRenderFailure: a file that failed to render answers 500 on its own
// path only, in its dialect's error format.
func TestRenderFailure(t *testing.T) {
	e := newEnv(t, storetest.Document(), nil)
	sn := e.srv.current()
	sn.files["/nocloud/meta-data"] = &resource{failed: true}
	sn.files["/v1/identity"] = &resource{failed: true}
	h := e.srv.Handler()
	if w := do(h, "GET", "/nocloud/meta-data"); w.Code != 500 || w.Header().Get("ETag") != "" {
		t.Errorf("failed NoCloud file: %d", w.Code)
	}
	if w := do(h, "GET", "/nocloud/user-data"); w.Code != 200 {
		t.Errorf("a sibling of the failed file: %d", w.Code)
	}
	if w := do(h, "GET", "/v1/identity", md...); w.Code != 500 || w.Header().Get("Content-Type") != contentJSON {
		t.Errorf("failed v1 file: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
}
