package instanceidentity_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/instanceidentity"
)

func testDocument() *instanceidentity.Document {
	return &instanceidentity.Document{
		AvailabilityZone: "zone-a", InstanceID: "6a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b",
		PrivateIP: "10.244.0.7", Region: "region-1", Version: instanceidentity.Version,
		Namespace: "tenant-a", Name: "vm1", UID: "0d4c2d4e-5b0f-4f0e-8d59-2b5f0c6f3a11",
	}
}

// writeFiles lays out what a verifier has: the document as served, the
// signature and the PKCS #7 as served (base64), and the published certificate.
func writeFiles(t *testing.T, dir string, id *payload.IdentityDocument, certPEM []byte) {
	t.Helper()
	sig, err := base64.StdEncoding.DecodeString(id.Signature)
	if err != nil {
		t.Fatal(err)
	}
	p7 := "-----BEGIN PKCS7-----\n" + id.PKCS7 + "\n-----END PKCS7-----\n"
	for name, data := range map[string][]byte{
		"document": []byte(id.Document), "signature.bin": sig, "pkcs7.pem": []byte(p7), "cert.pem": certPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// opensslVerify runs the two checks docs/ec2.md shows: the RSA signature
// with the certificate's public key, and the PKCS #7 with the certificate as
// the trust anchor.
func opensslVerify(t *testing.T, dir string) (sigErr, p7Err error) {
	t.Helper()
	run := func(args ...string) error {
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return err
	}
	if err := run("x509", "-in", "cert.pem", "-pubkey", "-noout", "-out", "pub.pem"); err != nil {
		t.Fatal(err)
	}
	sigErr = run("dgst", "-sha256", "-verify", "pub.pem", "-signature", "signature.bin", "document")
	p7Err = run("smime", "-verify", "-inform", "PEM", "-in", "pkcs7.pem", "-content", "document",
		"-certfile", "cert.pem", "-CAfile", "cert.pem", "-out", "/dev/null")
	return sigErr, p7Err
}

func TestOpenSSLVerifies(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	key, err := instanceidentity.NewKey(time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := key.Sign(testDocument())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, id, key.CertPEM())
	if sigErr, p7Err := opensslVerify(t, dir); sigErr != nil || p7Err != nil {
		t.Fatalf("openssl rejects a good document: signature %v, pkcs7 %v", sigErr, p7Err)
	}

	// One byte changed anywhere in the document fails both checks.
	for _, i := range []int{0, len(id.Document) / 2, len(id.Document) - 1} {
		bad := *id
		b := []byte(bad.Document)
		b[i] ^= 0x01
		bad.Document = string(b)
		writeFiles(t, dir, &bad, key.CertPEM())
		if sigErr, p7Err := opensslVerify(t, dir); sigErr == nil || p7Err == nil {
			t.Errorf("byte %d changed: openssl still verifies (signature %v, pkcs7 %v)", i, sigErr, p7Err)
		}
	}

	// Another key's certificate does not verify it.
	other, err := instanceidentity.NewKey(time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, id, other.CertPEM())
	if sigErr, p7Err := opensslVerify(t, dir); sigErr == nil || p7Err == nil {
		t.Errorf("another certificate verifies it (signature %v, pkcs7 %v)", sigErr, p7Err)
	}
}

func TestSignIsDeterministicAndParses(t *testing.T) {
	key, err := instanceidentity.NewKey(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, err := key.Sign(testDocument())
	if err != nil {
		t.Fatal(err)
	}
	b, err := key.Sign(testDocument())
	if err != nil {
		t.Fatal(err)
	}
	if *a != *b {
		t.Error("signing the same document twice gives different bytes")
	}
	keyPEM, err := key.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	again, err := instanceidentity.ParseKey(keyPEM, key.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	c, err := again.Sign(testDocument())
	if err != nil || *c != *a {
		t.Errorf("a parsed key signs differently: %v", err)
	}
	if _, err := instanceidentity.Verify([]byte(a.Document), a.Signature, []*x509.Certificate{key.Cert}, time.Now()); err != nil {
		t.Error(err)
	}
	if !bytes.Contains([]byte(a.Document), []byte(`"namespace": "tenant-a"`)) {
		t.Errorf("document %s", a.Document)
	}
}

// BenchmarkSign is the operator's cost per identity document rendered.
func BenchmarkSign(b *testing.B) {
	key, err := instanceidentity.NewKey(time.Now(), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	doc := testDocument()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := key.Sign(doc); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCache: a document signed before comes from the cache, bytes
// unchanged; another key or another document is signed afresh; the cache
// never holds more than Max.
func TestCache(t *testing.T) {
	a, err := instanceidentity.NewKey(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := instanceidentity.NewKey(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &instanceidentity.Cache{Max: 2}
	first, err := c.Sign(a, testDocument())
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Sign(a, testDocument())
	if err != nil || *again != *first || instanceidentity.Signatures(c) != 1 {
		t.Errorf("the same document and key were signed again (%v, %d signatures)", err, instanceidentity.Signatures(c))
	}
	direct, err := a.Sign(testDocument())
	if err != nil || *direct != *first {
		t.Errorf("the cached document differs from a fresh signature (%v)", err)
	}
	other, err := c.Sign(b, testDocument())
	if err != nil || other.Signature == first.Signature {
		t.Errorf("another key's signature came from the cache (%v)", err)
	}
	doc := testDocument()
	doc.Name = "vm2"
	changed, err := c.Sign(a, doc)
	if err != nil || changed.Document == first.Document {
		t.Errorf("another document came from the cache (%v)", err)
	}
}

// TestCacheConcurrent signs from several goroutines at once, over the
// cache's bound; run with -race.
func TestCacheConcurrent(t *testing.T) {
	key, err := instanceidentity.NewKey(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &instanceidentity.Cache{Max: 4}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				doc := testDocument()
				doc.Name = "vm" + strconv.Itoa((g+i)%6)
				signed, err := c.Sign(key, doc)
				if err != nil || !strings.Contains(signed.Document, `"name": "`+doc.Name+`"`) {
					t.Errorf("signing %s: %v", doc.Name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
