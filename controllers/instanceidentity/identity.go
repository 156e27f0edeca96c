// Package instanceidentity signs EC2-style instance identity documents: a JSON
// document naming the VM, its RSA SHA-256 signature, and the same signature as
// a detached PKCS #7 (CMS) SignedData, so that a verifier needs nothing but
// openssl and the published certificate.
//
// The operator signs when it renders a VM's payload: the document is static
// per payload, so the private key stays in the operator and never reaches a
// virt-launcher Pod, where one compromised sidecar would otherwise be able to
// sign documents for every VM of the fleet.
package instanceidentity

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// KeyBits is the size of signing keys: rsa2048 is what EC2 clients expect.
const KeyBits = 2048

// Version is the document's version member, as EC2 writes it.
const Version = "2017-09-30"

// Document is the instance identity document. The AWS members keep the
// names AWS SDKs decode (GetInstanceIdentityDocument); namespace, name and
// uid say which VirtualMachineInstance it describes.
type Document struct {
	AccountID        string `json:"accountId,omitempty"`
	Architecture     string `json:"architecture,omitempty"`
	AvailabilityZone string `json:"availabilityZone"`
	InstanceID       string `json:"instanceId"`
	InstanceType     string `json:"instanceType,omitempty"`
	PendingTime      string `json:"pendingTime,omitempty"`
	PrivateIP        string `json:"privateIp,omitempty"`
	Region           string `json:"region"`
	Version          string `json:"version"`
	// Namespace, Name and UID identify the VirtualMachineInstance.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

// Key is a signing key and its self-signed certificate.
type Key struct {
	Private *rsa.PrivateKey
	Cert    *x509.Certificate
}

// NewKey draws an RSA key and certifies it for [now, now+validity).
func NewKey(now time.Time, validity time.Duration) (*Key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, fmt.Errorf("generating the identity signing key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("drawing a certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"kubevirt-imds"},
			CommonName:   "kubevirt-imds instance identity " + now.UTC().Format("2006-01-02T15:04:05Z"),
		},
		NotBefore: now.Add(-time.Minute),
		NotAfter:  now.Add(validity),
		// It certifies itself (verifiers pin it as their trust anchor) and
		// signs documents; no extended key usage, so openssl's S/MIME
		// signer check accepts it.
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, fmt.Errorf("certifying the identity signing key: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the identity certificate: %w", err)
	}
	return &Key{Private: priv, Cert: cert}, nil
}

// ParseKey reads a key from its PEM private key (PKCS #1 or #8) and PEM
// certificate, and checks that they belong together.
func ParseKey(keyPEM, certPEM []byte) (*Key, error) {
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("identity key: no PEM block in the private key")
	}
	var priv *rsa.PrivateKey
	if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		priv = k
	} else {
		k8, err8 := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err8 != nil {
			return nil, fmt.Errorf("identity key: parsing the private key: %w", err8)
		}
		var ok bool
		if priv, ok = k8.(*rsa.PrivateKey); !ok {
			return nil, errors.New("identity key: the private key is not RSA")
		}
	}
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("identity key: want one certificate, got %d", len(certs))
	}
	pub, ok := certs[0].PublicKey.(*rsa.PublicKey)
	if !ok || !pub.Equal(&priv.PublicKey) {
		return nil, errors.New("identity key: the certificate does not match the private key")
	}
	return &Key{Private: priv, Cert: certs[0]}, nil
}

// ParseCertificates reads every CERTIFICATE block of a PEM bundle.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("identity certificates: %w", err)
		}
		out = append(out, c)
	}
}

// KeyPEM is the PKCS #8 PEM encoding of the private key.
func (k *Key) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, fmt.Errorf("encoding the identity key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CertPEM is the PEM encoding of the certificate.
func (k *Key) CertPEM() []byte { return CertPEM(k.Cert) }

// CertPEM is the PEM encoding of c.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// Fingerprint is the hex SHA-256 of c's DER.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Sign encodes doc and signs it. RSA PKCS #1 v1.5 signatures are
// deterministic, so the same document and key always give the same bytes
// (and the payload's hash stays put).
func (k *Key) Sign(doc *Document) (*payload.IdentityDocument, error) {
	body, err := encode(doc)
	if err != nil {
		return nil, err
	}
	return k.sign(body)
}

// Unsigned is doc without a signature: what a VM is served when its
// service does not sign (no ec2 dialect, or no key yet). cloud-init reads the
// document on a platform it takes for AWS (a firmware UUID starting with
// "ec2" is one in 2,048 of KubeVirt's) and, finding none, fetches it again,
// five tries each time, every time it asks for the instance-id: minutes of
// boot. Nothing verifies an unsigned document, so it proves nothing; it
// only says what the meta-data tree already says.
func Unsigned(doc *Document) (*payload.IdentityDocument, error) {
	body, err := encode(doc)
	if err != nil {
		return nil, err
	}
	return &payload.IdentityDocument{Document: string(body)}, nil
}

func encode(doc *Document) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encoding the identity document: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (k *Key) sign(body []byte) (*payload.IdentityDocument, error) {
	sig, err := k.signature(body)
	if err != nil {
		return nil, err
	}
	return k.document(body, sig)
}

// signature is the RSA PKCS #1 v1.5 SHA-256 signature of body.
func (k *Key) signature(body []byte) ([]byte, error) {
	digest := sha256.Sum256(body)
	sig, err := rsa.SignPKCS1v15(nil, k.Private, crypto.SHA256, digest[:])
	if err != nil {
		return nil, fmt.Errorf("signing the identity document: %w", err)
	}
	return sig, nil
}

// document is the identity document body, signed by k with sig.
func (k *Key) document(body, sig []byte) (*payload.IdentityDocument, error) {
	p7, err := signedData(k.Cert, sig)
	if err != nil {
		return nil, err
	}
	return &payload.IdentityDocument{
		Document:          string(body),
		Signature:         base64.StdEncoding.EncodeToString(sig),
		PKCS7:             base64.StdEncoding.EncodeToString(p7),
		CertificateSHA256: Fingerprint(k.Cert),
	}, nil
}

// Cache remembers signatures by content and key, so that rendering a VM's
// payload again (the operator does on every event that may concern it) costs
// a hash and the encoding of the signed data, not an RSA signature. It keeps
// the 256-byte signature only, not the document around it, which is about
// six times larger: the cache is as large as the fleet. It holds at most Max
// signatures and starts afresh when full. Safe for concurrent use.
type Cache struct {
	// Max bounds the entries; 0 means 16384.
	Max int

	mu     sync.Mutex
	m      map[[sha256.Size]byte][]byte
	signed int // RSA signatures made, for tests
}

// Sign is k.Sign(doc), with the signature from the cache when k signed the
// same bytes before.
func (c *Cache) Sign(k *Key, doc *Document) (*payload.IdentityDocument, error) {
	body, err := encode(doc)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(k.Cert.Raw)
	h.Write(body)
	var id [sha256.Size]byte
	h.Sum(id[:0])
	c.mu.Lock()
	sig := c.m[id]
	c.mu.Unlock()
	if sig != nil {
		return k.document(body, sig)
	}
	sig, err = k.signature(body)
	if err != nil {
		return nil, err
	}
	limit := c.Max
	if limit <= 0 {
		limit = 16384
	}
	c.mu.Lock()
	c.signed++
	if c.m == nil || len(c.m) >= limit {
		c.m = make(map[[sha256.Size]byte][]byte)
	}
	c.m[id] = sig
	c.mu.Unlock()
	return k.document(body, sig)
}

// Verify checks an identity document's signature against certs, as a
// verifier would: it returns the certificate that signed it, valid at now.
func Verify(document []byte, signatureB64 string, certs []*x509.Certificate, now time.Time) (*x509.Certificate, error) {
	sig, err := base64.StdEncoding.DecodeString(signatureB64)
	if err != nil {
		return nil, fmt.Errorf("identity signature: %w", err)
	}
	digest := sha256.Sum256(document)
	for _, c := range certs {
		pub, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok || now.Before(c.NotBefore) || now.After(c.NotAfter) {
			continue
		}
		if rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil {
			return c, nil
		}
	}
	return nil, errors.New("identity signature: no published certificate verifies it")
}

// OIDs of CMS (RFC 5652) and its algorithms.
var (
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidSHA256     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidRSA        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
)

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type signerInfo struct {
	Version            int
	SID                issuerAndSerial
	DigestAlgorithm    algorithmIdentifier
	SignatureAlgorithm algorithmIdentifier
	Signature          []byte
}

type encapsulatedContentInfo struct {
	ContentType asn1.ObjectIdentifier
}

type signedDataBody struct {
	Version          int
	DigestAlgorithms []algorithmIdentifier `asn1:"set"`
	EncapContentInfo encapsulatedContentInfo
	SignerInfos      []signerInfo `asn1:"set"`
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue
}

// signedData is a detached CMS SignedData whose one SignerInfo carries sig,
// made without signed attributes: its signature is then the plain RSA
// SHA-256 signature of the content. The certificate is left out, as EC2
// leaves it out: the verifier supplies the one it trusts.
func signedData(cert *x509.Certificate, sig []byte) ([]byte, error) {
	sha := algorithmIdentifier{Algorithm: oidSHA256, Parameters: asn1.NullRawValue}
	sd := signedDataBody{
		Version:          1,
		DigestAlgorithms: []algorithmIdentifier{sha},
		EncapContentInfo: encapsulatedContentInfo{ContentType: oidData},
		SignerInfos: []signerInfo{{
			Version:            1,
			SID:                issuerAndSerial{Issuer: asn1.RawValue{FullBytes: cert.RawIssuer}, Serial: cert.SerialNumber},
			DigestAlgorithm:    sha,
			SignatureAlgorithm: algorithmIdentifier{Algorithm: oidRSA, Parameters: asn1.NullRawValue},
			Signature:          sig,
		}},
	}
	inner, err := asn1.Marshal(sd)
	if err != nil {
		return nil, fmt.Errorf("encoding the PKCS #7 signature: %w", err)
	}
	out, err := asn1.Marshal(contentInfo{
		ContentType: oidSignedData,
		Content:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the PKCS #7 signature: %w", err)
	}
	return out, nil
}
