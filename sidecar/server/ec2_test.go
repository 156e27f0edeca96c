package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/instanceidentity"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

// ec2Document is the test document with the EC2 member the operator writes:
// placement, instance type, the NICs and a signed identity document.
func ec2Document(t testing.TB, tokens string) *payload.Document {
	t.Helper()
	doc := storetest.Document()
	key, err := instanceidentity.NewKey(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := key.Sign(&instanceidentity.Document{
		AvailabilityZone: "zone-a", InstanceID: doc.Instance.ID, InstanceType: "u1.small", PrivateIP: "10.244.1.7",
		Region: "region-1", Version: instanceidentity.Version, Namespace: doc.Instance.Namespace,
		Name: doc.Instance.Name, UID: doc.Instance.UID,
	})
	if err != nil {
		t.Fatal(err)
	}
	doc.EC2 = &payload.EC2{
		HTTPTokens: tokens, HopLimit: 2, Region: "region-1", AvailabilityZone: "zone-a", InstanceType: "u1.small",
		Interfaces: []payload.EC2Interface{
			{MACAddress: "52:54:00:12:34:56", DeviceNumber: 0, IPv4: []string{"10.0.2.2/24"}},
			{MACAddress: "52:54:00:ab:cd:ef", DeviceNumber: 1, IPv4: []string{"192.168.50.10/24"}},
		},
		Identity: id,
	}
	return doc
}

// sdkClient is the AWS SDK's IMDS client against addr, IMDSv2 only
// (EnableFallback disabled), as a user of the SDK configures it.
func sdkClient(addr string) *imds.Client {
	return imds.New(imds.Options{
		Endpoint:       "http://" + addr,
		EnableFallback: aws.FalseTernary,
	})
}

func loopbackEnv(t *testing.T, doc *payload.Document) (*env, string) {
	t.Helper()
	e := newEnv(t, doc, func(c *Config) { c.Hosts = []string{"127.0.0.1"} })
	return e, serve(t, e)
}

// TestAWSSDKClient: the AWS SDK for Go v2's IMDS client, with fallback to
// IMDSv1 disabled, gets every value of the payload through IMDSv2.
func TestAWSSDKClient(t *testing.T) {
	for _, mode := range []string{payload.HTTPTokensRequired, payload.HTTPTokensOptional} {
		t.Run(mode, func(t *testing.T) {
			doc := ec2Document(t, mode)
			_, addr := loopbackEnv(t, doc)
			c := sdkClient(addr)
			ctx := context.Background()
			for path, want := range map[string]string{
				"instance-id":                 doc.Instance.ID,
				"local-ipv4":                  "10.0.2.2",
				"local-hostname":              "vm1",
				"mac":                         "52:54:00:12:34:56",
				"placement/region":            "region-1",
				"placement/availability-zone": "zone-a",
				"instance-type":               "u1.small",
				"network/interfaces/macs/52:54:00:ab:cd:ef/local-ipv4s":            "192.168.50.10",
				"network/interfaces/macs/52:54:00:ab:cd:ef/device-number":          "1",
				"network/interfaces/macs/52:54:00:ab:cd:ef/subnet-ipv4-cidr-block": "192.168.50.0/24",
			} {
				out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
				if err != nil {
					t.Errorf("GetMetadata %s: %v", path, err)
					continue
				}
				if got := readAll(t, out.Content); got != want {
					t.Errorf("GetMetadata %s = %q, want %q", path, got, want)
				}
			}
			ud, err := c.GetUserData(ctx, &imds.GetUserDataInput{})
			if err != nil {
				t.Fatalf("GetUserData: %v", err)
			}
			if got := readAll(t, ud.Content); got != string(doc.UserData) {
				t.Errorf("GetUserData = %q", got)
			}
			iid, err := c.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
			if err != nil {
				t.Fatalf("GetInstanceIdentityDocument: %v", err)
			}
			if iid.InstanceID != doc.Instance.ID || iid.Region != "region-1" || iid.AvailabilityZone != "zone-a" ||
				iid.PrivateIP != "10.244.1.7" || iid.InstanceType != "u1.small" {
				t.Errorf("GetInstanceIdentityDocument = %+v", iid.InstanceIdentityDocument)
			}
			region, err := c.GetRegion(ctx, &imds.GetRegionInput{})
			if err != nil || region.Region != "region-1" {
				t.Errorf("GetRegion = %+v, %v", region, err)
			}
			for path, want := range map[string]string{
				"instance-identity/document":  doc.EC2.Identity.Document,
				"instance-identity/signature": wrap64(doc.EC2.Identity.Signature),
				"instance-identity/pkcs7":     wrap64(doc.EC2.Identity.PKCS7),
				"instance-identity/rsa2048":   wrap64(doc.EC2.Identity.PKCS7),
			} {
				out, err := c.GetDynamicData(ctx, &imds.GetDynamicDataInput{Path: path})
				if err != nil {
					t.Errorf("GetDynamicData %s: %v", path, err)
					continue
				}
				if got := readAll(t, out.Content); got != want {
					t.Errorf("GetDynamicData %s = %q, want %q", path, got, want)
				}
			}
			var ns struct{ Namespace, Name, UID string }
			if err := json.Unmarshal([]byte(doc.EC2.Identity.Document), &ns); err != nil || ns.Namespace != "tenant-a" || ns.Name != "vm1" || ns.UID != doc.Instance.UID {
				t.Errorf("identity document names %+v (%v)", ns, err)
			}
		})
	}
}

func readAll(t *testing.T, rc io.ReadCloser) string {
	t.Helper()
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestIMDSv1Refused: with tokens required, a request without a token (as
// the SDK sends it with fallback once the token PUT fails) gets 401, and so
// does a request with an invalid or expired token in either mode.
func TestIMDSv1Refused(t *testing.T) {
	doc := ec2Document(t, payload.HTTPTokensRequired)
	e, addr := loopbackEnv(t, doc)
	get := func(path string, hdr ...string) (int, http.Header) {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	put := func(ttl ...string) (int, string, http.Header) {
		req, err := http.NewRequest(http.MethodPut, "http://"+addr+TokenPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range ttl {
			req.Header.Add(TokenTTLHeader, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, _ := get("/latest/meta-data/instance-id"); code != http.StatusUnauthorized {
		t.Errorf("IMDSv1 with tokens required: %d, want 401", code)
	}
	if code, _ := get("/latest/meta-data/instance-id", TokenHeader, "bogus"); code != http.StatusUnauthorized {
		t.Errorf("invalid token: %d, want 401", code)
	}
	for _, ttl := range [][]string{nil, {"0"}, {"21601"}, {"-1"}, {"1.5"}, {"abc"}, {""}, {"60", "60"}} {
		if code, _, _ := put(ttl...); code != http.StatusBadRequest {
			t.Errorf("PUT with TTL %q: %d, want 400", ttl, code)
		}
	}
	code, tok, h := put("21600")
	if code != http.StatusOK || h.Get(TokenTTLHeader) != "21600" || tok == "" {
		t.Fatalf("PUT: %d %q %v", code, tok, h)
	}
	code, h = get("/latest/meta-data/instance-id", TokenHeader, tok)
	if code != http.StatusOK {
		t.Errorf("GET with token: %d", code)
	}
	if ttl, _ := strconv.Atoi(h.Get(TokenTTLHeader)); ttl < 21590 || ttl > 21600 {
		t.Errorf("remaining TTL echoed %q", h.Get(TokenTTLHeader))
	}
	// Tokens expire.
	now := time.Now()
	e.srv.tokens.now = func() time.Time { return now.Add(21601 * time.Second) }
	if code, _ := get("/latest/meta-data/instance-id", TokenHeader, tok); code != http.StatusUnauthorized {
		t.Errorf("expired token: %d, want 401", code)
	}
	e.srv.tokens.now = time.Now
	// A token from another sidecar process (a restart) is invalid.
	other, err := newTokenIssuer()
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get("/latest/meta-data/instance-id", TokenHeader, other.issue(60)); code != http.StatusUnauthorized {
		t.Errorf("a restarted sidecar's token: %d, want 401", code)
	}
	// The OpenStack dialect's own paths never need a token.
	if code, _ := get("/openstack/latest/meta_data.json"); code != http.StatusOK {
		t.Errorf("OpenStack with tokens required: %d", code)
	}
}

// TestIMDSv1Optional: with tokens optional, a request without a token is
// served; an invalid token is still refused, as on EC2.
func TestIMDSv1Optional(t *testing.T) {
	doc := ec2Document(t, payload.HTTPTokensOptional)
	e := newEnv(t, doc, nil)
	h := e.srv.Handler()
	if w := do(h, http.MethodGet, "/latest/meta-data/instance-id"); w.Code != http.StatusOK || w.Body.String() != doc.Instance.ID {
		t.Errorf("IMDSv1: %d %q", w.Code, w.Body)
	}
	if w := do(h, http.MethodGet, "/latest/meta-data/instance-id", TokenHeader, "x"); w.Code != http.StatusUnauthorized {
		t.Errorf("invalid token: %d, want 401", w.Code)
	}
	// Without the ec2 dialect nothing requires a token, whatever the
	// document says: only OpenStack's EC2 subset is served.
	doc.EC2.HTTPTokens = payload.HTTPTokensRequired
	doc.Dialects = []payload.Dialect{payload.DialectOpenStack}
	e.update(t, doc)
	if w := do(h, http.MethodGet, "/latest/meta-data/instance-id"); w.Code != http.StatusOK {
		t.Errorf("OpenStack-only, IMDSv1: %d", w.Code)
	}
	doc.Dialects = []payload.Dialect{payload.DialectV1}
	e.update(t, doc)
	if w := do(h, http.MethodPut, TokenPath, TokenTTLHeader, "60"); w.Code != http.StatusNotFound {
		t.Errorf("token PUT without the EC2 paths: %d, want 404", w.Code)
	}
}

// TestEC2Listings pins the listings as EC2 formats them.
func TestEC2Listings(t *testing.T) {
	doc := ec2Document(t, payload.HTTPTokensOptional)
	e := newEnv(t, doc, nil)
	h := e.srv.Handler()
	for path, want := range map[string]string{
		"/latest/":                                                     "dynamic\nmeta-data\nuser-data",
		"/latest/dynamic/":                                             "instance-identity/",
		"/latest/dynamic/instance-identity/":                           "document\npkcs7\nrsa2048\nsignature",
		"/latest/dynamic/instance-identity":                            "document\npkcs7\nrsa2048\nsignature",
		"/latest/meta-data/placement/":                                 "availability-zone\nregion",
		"/latest/meta-data/placement/region/":                          "region-1",
		"/latest/meta-data/network/interfaces/macs/52:54:00:12:34:56/": "device-number\ninterface-id\nlocal-hostname\nlocal-ipv4s\nmac\nsubnet-id\nsubnet-ipv4-cidr-block\nvpc-id\nvpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks",
	} {
		w := do(h, http.MethodGet, path)
		if w.Code != http.StatusOK || w.Body.String() != want {
			t.Errorf("%s: %d %q, want %q", path, w.Code, w.Body, want)
		}
	}
	if w := do(h, http.MethodGet, "/latest/meta-data/"); !strings.Contains(w.Body.String(), "instance-type\n") {
		t.Errorf("meta-data/ lists %q", w.Body)
	}
}

// TestEC2UnsignedIdentity: where the operator does not sign (a service
// without the ec2 dialect, or no key yet), dynamic/instance-identity/ lists
// and serves the document alone, as cloud-init reads it on a platform it
// takes for AWS; the signatures are not there.
func TestEC2UnsignedIdentity(t *testing.T) {
	doc := storetest.Document()
	doc.Dialects = []payload.Dialect{payload.DialectOpenStack}
	id, err := instanceidentity.Unsigned(&instanceidentity.Document{
		AvailabilityZone: "kubevirt", InstanceID: doc.Instance.ID, Region: "kubevirt", Version: instanceidentity.Version,
		Namespace: doc.Instance.Namespace, Name: doc.Instance.Name, UID: doc.Instance.UID,
	})
	if err != nil {
		t.Fatal(err)
	}
	doc.EC2 = &payload.EC2{Identity: id}
	h := newEnv(t, doc, nil).srv.Handler()
	for _, v := range EC2Versions {
		for path, want := range map[string]string{
			"/" + v + "/":                                    "dynamic\nmeta-data\nuser-data",
			"/" + v + "/dynamic/instance-identity":           "document",
			"/" + v + "/dynamic/instance-identity/":          "document",
			"/" + v + "/dynamic/instance-identity/document":  id.Document,
			"/" + v + "/dynamic/instance-identity/document/": id.Document,
		} {
			if w := do(h, http.MethodGet, path); w.Code != http.StatusOK || w.Body.String() != want {
				t.Errorf("%s: %d %q, want %q", path, w.Code, w.Body, want)
			}
		}
		for _, name := range []string{"signature", "pkcs7", "rsa2048"} {
			if w := do(h, http.MethodGet, "/"+v+"/dynamic/instance-identity/"+name); w.Code != http.StatusNotFound {
				t.Errorf("%s unsigned: %d, want 404", name, w.Code)
			}
		}
	}
	var got instanceidentity.Document
	if err := json.Unmarshal([]byte(id.Document), &got); err != nil || got.InstanceID != doc.Instance.ID {
		t.Errorf("document %q: instanceId %q, %v", id.Document, got.InstanceID, err)
	}
}

// TestTokensConcurrent hammers token issue and validation from many
// goroutines; run with -race.
func TestTokensConcurrent(t *testing.T) {
	doc := ec2Document(t, payload.HTTPTokensRequired)
	e := newEnv(t, doc, nil)
	h := e.srv.Handler()
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				w := do(h, http.MethodPut, TokenPath, TokenTTLHeader, "60")
				if w.Code != http.StatusOK {
					errs <- "PUT " + strconv.Itoa(w.Code)
					return
				}
				if r := do(h, http.MethodGet, "/latest/meta-data/instance-id", TokenHeader, w.Body.String()); r.Code != http.StatusOK {
					errs <- "GET " + strconv.Itoa(r.Code)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
