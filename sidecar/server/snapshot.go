package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/render"
)

const (
	contentText   = "text/plain; charset=utf-8"
	contentYAML   = "application/yaml"
	contentJSON   = "application/json"
	contentBinary = "application/octet-stream"
)

// OpenStackVersions are the metadata versions listed at /openstack, oldest
// first, as nova lists them.
var OpenStackVersions = []string{
	"2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
	"2016-10-06", "2017-02-22", "2018-08-27", "latest",
}

// EC2Versions are the EC2-compatible versions served beside OpenStack's.
var EC2Versions = []string{"2009-04-04", "latest"}

// openStackFiles are the files of an OpenStack version directory with the
// first version that has them (nova's history).
var openStackFiles = []struct{ name, since string }{
	{"meta_data.json", "2012-08-10"},
	{"network_data.json", "2015-10-15"},
	{"password", "2013-04-04"},
	{"user_data", "2012-08-10"},
	{"vendor_data.json", "2013-10-17"},
	{"vendor_data2.json", "2016-10-06"},
}

// resource is one rendered response body.
type resource struct {
	body        []byte
	contentType string
	etag        string
	// noStore marks responses that must not be cached (tokens).
	noStore bool
	// failed marks a file that could not be rendered (500).
	failed bool
}

func newResource(body []byte, contentType string) *resource {
	return &resource{body: body, contentType: contentType, etag: etagOf(body)}
}

// etagOf derives an ETag from the body alone: the same content gives the same
// ETag in every sidecar and after every restart.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// snapshot is every static response for one document, by canonical path.
// Directories are present both with and without the trailing slash (EC2
// clients such as cloudbase-init fetch listings without it), and so are the
// EC2 tree's leaves (EC2 answers them; botocore asks for
// placement/region/); nothing else is aliased.
type snapshot struct {
	doc   *payload.Document
	files map[string]*resource
	// v1NetworkConfig holds /v1/network-config by format; absent when the
	// document has no network configuration.
	v1NetworkConfig map[string]*resource
}

// buildSnapshot renders doc for the dialects it enables. It always returns a
// snapshot; the error lists the files that failed to render, which answer
// 500.
func buildSnapshot(doc *payload.Document) (*snapshot, error) {
	s := &snapshot{doc: doc, files: map[string]*resource{}}
	dir := func(p string, entries []string) {
		r := newResource([]byte(strings.Join(entries, "\n")), contentText)
		s.files[p] = r
		if p != "/" {
			s.files[strings.TrimSuffix(p, "/")] = r
		}
	}
	// rendered wraps a renderer's result: a failure becomes a resource that
	// answers 500, so one broken file does not take the others down.
	var errs []error
	rendered := func(contentType string) func([]byte, error) *resource {
		return func(b []byte, err error) *resource {
			if err != nil {
				errs = append(errs, err)
				return &resource{failed: true}
			}
			return newResource(b, contentType)
		}
	}

	// NoCloud's network-config is /v1/network-config's version 2: rendered
	// once, for whichever dialect asks first.
	var v2 *resource
	networkConfigV2 := func() *resource {
		if v2 == nil {
			v2 = rendered(contentYAML)(render.NoCloudNetworkConfig(doc))
		}
		return v2
	}

	if doc.Serves(payload.DialectNoCloud) {
		// Every NoCloud file is served, "none" as an empty 200: cloud-init
		// fails the whole datasource when user-data cannot be fetched, and
		// retries any error on the others ten times a second apart before
		// doing without (measured: vendor-data on 22.4 and 25.1,
		// network-config on 25.1, 10 s of boot each). Empty vendor-data and
		// network-config are none to it; the guest keeps its fallback
		// network.
		s.files["/nocloud/meta-data"] = rendered(contentYAML)(render.NoCloudMetaData(doc))
		s.files["/nocloud/network-config"] = networkConfigV2()
		s.files["/nocloud/user-data"] = newResource(doc.UserData, contentBinary)
		s.files["/nocloud/vendor-data"] = newResource(doc.VendorData, contentBinary)
		entries := []string{"meta-data", "network-config", "user-data", "vendor-data"}
		dir("/nocloud/", entries)
	}

	if doc.Serves(payload.DialectOpenStack) {
		files := map[string]*resource{
			"meta_data.json":    rendered(contentJSON)(render.OpenStackMetaData(doc)),
			"network_data.json": rendered(contentJSON)(render.OpenStackNetworkData(doc)),
			"password":          newResource(nil, contentText),
			"vendor_data.json":  rendered(contentJSON)(render.OpenStackVendorData(doc)),
			"vendor_data2.json": rendered(contentJSON)(render.OpenStackVendorData2(doc)),
		}
		if len(doc.UserData) > 0 {
			files["user_data"] = newResource(doc.UserData, contentBinary)
		}
		dir("/openstack/", OpenStackVersions)
		for _, v := range OpenStackVersions {
			var entries []string
			for _, f := range openStackFiles {
				r, ok := files[f.name]
				if !ok || (v != "latest" && v < f.since) {
					continue
				}
				s.files["/openstack/"+v+"/"+f.name] = r
				entries = append(entries, f.name)
			}
			dir("/openstack/"+v+"/", entries)
		}
	}

	if doc.Serves(payload.DialectOpenStack) || doc.Serves(payload.DialectEC2) {
		s.addEC2(doc, dir)
	}

	if doc.Serves(payload.DialectV1) {
		s.files["/v1/identity"] = rendered(contentJSON)(jsonBody(identity{
			InstanceID:         doc.Instance.ID,
			UID:                doc.Instance.UID,
			Name:               doc.Instance.Name,
			Namespace:          doc.Instance.Namespace,
			Hostname:           doc.Instance.Hostname,
			ServiceAccountName: doc.Instance.ServiceAccountName,
		}))
		s.files["/v1/metadata"] = rendered(contentJSON)(jsonBody(doc.Instance))
		if len(doc.UserData) > 0 {
			s.files["/v1/user-data"] = newResource(doc.UserData, contentBinary)
		}
		if len(doc.VendorData) > 0 {
			s.files["/v1/vendor-data"] = newResource(doc.VendorData, contentBinary)
		}
		if doc.Network != nil {
			s.v1NetworkConfig = map[string]*resource{
				"json": rendered(contentJSON)(jsonBody(doc.Network)),
				"v1":   rendered(contentYAML)(render.NetworkConfigV1(doc)),
				"v2":   networkConfigV2(),
				"eni":  newResource([]byte(render.ENI(doc)), contentText),
			}
		}
		dir("/v1/", v1Endpoints)
	}
	if err := errors.Join(errs...); err != nil {
		return s, fmt.Errorf("rendering document %s: %w", doc.Hash, err)
	}
	return s, nil
}

// v1Endpoints is the /v1/ listing.
var v1Endpoints = []string{"identity", "metadata", "network-config", "token", "user-data", "vendor-data"}

// identity is the /v1/identity body.
type identity struct {
	InstanceID         string `json:"instanceId"`
	UID                string `json:"uid"`
	Name               string `json:"name"`
	Namespace          string `json:"namespace"`
	Hostname           string `json:"hostname"`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
}

func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding JSON: %w", err)
	}
	return b, nil
}

// addEC2 adds the EC2 tree of every version in EC2Versions.
func (s *snapshot) addEC2(doc *payload.Document, dir func(string, []string)) {
	leaf := func(p string, r *resource) {
		s.files[p] = r
		s.files[p+"/"] = r
	}
	tree := render.EC2MetaData(doc)
	dir("/", EC2Versions)
	// The files of dynamic/instance-identity/, listed as EC2 lists them:
	// the document, and its signatures where the operator signed it.
	var identity map[string]*resource
	var identityFiles []string
	if doc.EC2 != nil && doc.EC2.Identity != nil {
		id := doc.EC2.Identity
		identity = map[string]*resource{"document": newResource([]byte(id.Document), contentText)}
		if id.PKCS7 != "" {
			// EC2 serves the PKCS #7 signature as base64 lines of 64 without
			// PEM armour, the same at pkcs7 and rsa2048 here (one RSA 2048 key).
			p7 := newResource([]byte(wrap64(id.PKCS7)), contentText)
			identity["pkcs7"], identity["rsa2048"] = p7, p7
		}
		if id.Signature != "" {
			identity["signature"] = newResource([]byte(wrap64(id.Signature)), contentText)
		}
		identityFiles = slices.Sorted(maps.Keys(identity))
	}
	for _, v := range EC2Versions {
		// EC2 lists a version's categories without a trailing slash.
		entries := []string{"meta-data"}
		if identity != nil {
			entries = []string{"dynamic", "meta-data"}
		}
		if len(doc.UserData) > 0 {
			leaf("/"+v+"/user-data", newResource(doc.UserData, contentBinary))
			entries = append(entries, "user-data")
		}
		dir("/"+v+"/", entries)
		if identity != nil {
			dir("/"+v+"/dynamic/", []string{"instance-identity/"})
			dir("/"+v+"/dynamic/instance-identity/", identityFiles)
			for name, r := range identity {
				leaf("/"+v+"/dynamic/instance-identity/"+name, r)
			}
		}
		for k, body := range tree {
			p := "/" + v + "/meta-data/" + k
			r := newResource(body, contentText)
			if k == "" || strings.HasSuffix(k, "/") {
				s.files[p] = r
				s.files[strings.TrimSuffix(p, "/")] = r
			} else {
				leaf(p, r)
			}
		}
	}
}

// wrap64 breaks base64 text into lines of 64 characters, as EC2 serves its
// signatures.
func wrap64(b64 string) string {
	var sb strings.Builder
	for len(b64) > 64 {
		sb.WriteString(b64[:64])
		sb.WriteByte('\n')
		b64 = b64[64:]
	}
	sb.WriteString(b64)
	return sb.String()
}
