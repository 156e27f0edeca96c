package payload_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestParseFutureDocument pins the upgrade contract: a document written by a
// newer operator, with fields this version does not know at the top level and
// inside instance, network, an interface, nameservers, a token, serve and
// source, a dialect it does not know, another member order and indentation,
// is accepted, and what this version knows of it is read as written. The
// fixture's hash was computed outside Go (sha256sum over the file with the
// hash value written as ""), so the test does not pin Go's own encoding.
func TestParseFutureDocument(t *testing.T) {
	raw := readFixture(t, "future-v1.json")
	doc, err := payload.Parse(raw)
	if err != nil {
		t.Fatalf("a document from a newer operator is rejected: %v", err)
	}
	if doc.Hash != "sha256:5a8183c11f498e75484251c1c35efd55da5031c426b428375b36d7d10aa501a7" {
		t.Errorf("hash %q", doc.Hash)
	}
	if doc.Instance.ID != "6a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b" || doc.Instance.Hostname != "vm1" || doc.Instance.Tags["env"] != "test" {
		t.Errorf("instance %+v", doc.Instance)
	}
	if string(doc.UserData) != "#cloud-config\nhostname: vm1\n" {
		t.Errorf("user-data %q", doc.UserData)
	}
	if doc.Network == nil || len(doc.Network.Interfaces) != 1 {
		t.Fatalf("network %+v", doc.Network)
	}
	nic := doc.Network.Interfaces[0]
	if nic.MACAddress != "52:54:00:12:34:56" || !nic.Primary || !nic.DHCP4 || nic.Bridge != "k6t-eth0" {
		t.Errorf("interface %+v", nic)
	}
	if len(doc.Tokens) != 1 || doc.Tokens[0].Path != payload.TokenPath("vault") {
		t.Errorf("tokens %+v", doc.Tokens)
	}
	// The fixture predates the ec2 dialect.
	for _, d := range []payload.Dialect{payload.DialectV1, payload.DialectNoCloud, payload.DialectOpenStack} {
		if !doc.Serves(d) {
			t.Errorf("dialect %s not served", d)
		}
	}
	if doc.Serve != (payload.Serve{Interface: "default", Bridge: "k6t-eth0"}) || doc.Source.MetadataService != "default" {
		t.Errorf("serve %+v source %+v", doc.Serve, doc.Source)
	}
}

// TestParseOlderDocument: a document written by the operator before the hash
// covered the stored bytes (commit 590dd25, which hashed its own re-encoding)
// is accepted, and sealing the same content today writes the very same bytes,
// so that a sidecar of that version accepts what this operator writes as
// long as it sets no field that version lacks.
func TestParseOlderDocument(t *testing.T) {
	raw := readFixture(t, "older-v1.json")
	doc, err := payload.Parse(raw)
	if err != nil {
		t.Fatalf("a document from the previous operator is rejected: %v", err)
	}
	if doc.Instance.Name != "vm1" || len(doc.Network.Interfaces) != 2 || doc.Network.Interfaces[1].MTU != 9000 {
		t.Errorf("document %+v", doc)
	}
	resealed, err := doc.Seal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resealed, raw) {
		t.Errorf("sealing the same content gives other bytes:\n%s\nwant\n%s", resealed, raw)
	}
}

func TestSealParseRoundTrip(t *testing.T) {
	d := &payload.Document{
		Instance: payload.Instance{ID: "i-1", Name: "vm", Tags: map[string]string{"quote": `"}`, "hash": `"hash":"x"`}},
		UserData: []byte("#!/bin/sh\necho \"hash\"\n"),
		Dialects: []payload.Dialect{payload.DialectV1},
	}
	raw, err := d.Seal()
	if err != nil {
		t.Fatal(err)
	}
	want, err := d.ComputeHash()
	if err != nil || d.Hash != want || !strings.HasPrefix(want, payload.HashPrefix) {
		t.Fatalf("Seal set hash %q, ComputeHash %q, %v", d.Hash, want, err)
	}
	got, err := payload.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != d.Hash || got.Instance.Tags["hash"] != `"hash":"x"` {
		t.Errorf("parsed %+v", got)
	}
	// The same content seals to the same hash; other content to another.
	again, _ := d.Seal()
	if !bytes.Equal(again, raw) {
		t.Error("sealing twice differs")
	}
	d.Instance.Hostname = "other"
	if _, err := d.Seal(); err != nil || d.Hash == got.Hash {
		t.Errorf("a changed document kept its hash %q (%v)", d.Hash, err)
	}
}

// TestParseRejects: the hash covers every byte, fields this version does not
// know included, so truncated, edited or ambiguous documents are never served.
func TestParseRejects(t *testing.T) {
	future := string(readFixture(t, "future-v1.json"))
	older := string(readFixture(t, "older-v1.json"))
	for name, raw := range map[string]string{
		"unknown field edited":     strings.Replace(future, `"zone-b"`, `"zone-c"`, 1),
		"unknown field added":      strings.Replace(older, `"kind":"InstancePayload",`, `"kind":"InstancePayload","extra":1,`, 1),
		"known field edited":       strings.Replace(older, `"hostname":"vm1"`, `"hostname":"vm2"`, 1),
		"truncated":                older[:len(older)-40],
		"trailing data":            older + `{}`,
		"second hash member":       strings.Replace(older, `"kind":"InstancePayload",`, `"kind":"InstancePayload","hash":"",`, 1),
		"hash in another case":     strings.Replace(older, `"kind":"InstancePayload",`, `"kind":"InstancePayload","Hash":"",`, 1),
		"no hash":                  `{"apiVersion":"` + payload.APIVersion + `","instance":{"id":"x"}}`,
		"hash not a string":        `{"apiVersion":"` + payload.APIVersion + `","instance":{"id":"x"},"hash":null}`,
		"not an object":            `[]`,
		"another apiVersion":       strings.Replace(older, payload.APIVersion, "payload.imds.kubevirt.io/v2", 1),
		"empty instance id":        strings.Replace(older, `"id":"6a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b"`, `"id":""`, 1),
		"unknown dialect edited":   strings.Replace(future, `"gce"`, `"ec2"`, 1),
		"white space outside hash": strings.Replace(older, `"kind":`, `"kind": `, 1),
	} {
		if _, err := payload.Parse([]byte(raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestSharedDocument: a document that leaves its user-data and vendor-data to
// its service's shared document is served with them only beside that very
// service's document, and its hash follows both.
func TestSharedDocument(t *testing.T) {
	shared := &payload.SharedDocument{MetadataService: "web", UserData: []byte("#cloud-config\n"), VendorData: []byte("v")}
	raw, err := shared.Seal()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := payload.ParseShared(raw)
	if err != nil || parsed.Hash != shared.Hash || string(parsed.UserData) != "#cloud-config\n" {
		t.Fatalf("ParseShared: %+v, %v", parsed, err)
	}
	if _, err := payload.ParseShared(bytes.Replace(raw, []byte(`"web"`), []byte(`"db"`), 1)); err == nil {
		t.Error("an edited shared document parsed")
	}
	d := &payload.Document{Instance: payload.Instance{ID: "i-1"}, Dialects: []payload.Dialect{payload.DialectV1},
		Shared: &payload.SharedRef{MetadataService: "web"}}
	if _, err := d.Seal(); err != nil {
		t.Fatal(err)
	}

	served, err := d.WithShared(parsed)
	if err != nil {
		t.Fatal(err)
	}
	if string(served.UserData) != "#cloud-config\n" || string(served.VendorData) != "v" || d.UserData != nil {
		t.Errorf("served user-data %q vendor-data %q; the document's own user-data became %q", served.UserData, served.VendorData, d.UserData)
	}
	if served.Hash == d.Hash || served.Hash == parsed.Hash || !strings.HasPrefix(served.Hash, payload.HashPrefix) {
		t.Errorf("served hash %q: want one of its own (document %q, shared %q)", served.Hash, d.Hash, parsed.Hash)
	}
	edited := &payload.SharedDocument{MetadataService: "web", UserData: []byte("#cloud-config\n# edited\n")}
	if _, err := edited.Seal(); err != nil {
		t.Fatal(err)
	}
	if again, _ := d.WithShared(edited); again == nil || again.Hash == served.Hash {
		t.Error("an edit of the shared document kept the served hash")
	}

	for name, s := range map[string]*payload.SharedDocument{"none": nil, "another service's": {MetadataService: "db"}} {
		if _, err := d.WithShared(s); !errors.Is(err, payload.ErrSharedMissing) {
			t.Errorf("with %s shared document: %v, want ErrSharedMissing", name, err)
		}
	}
	inline := &payload.Document{Instance: payload.Instance{ID: "i-2"}, UserData: []byte("mine")}
	if got, err := inline.WithShared(nil); err != nil || got != inline {
		t.Errorf("a document holding its own user-data: %v, %v", got, err)
	}
}
