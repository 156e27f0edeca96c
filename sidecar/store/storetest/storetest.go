// Package storetest writes payload and token directories the way kubelet's
// atomic writer does, for tests of the sidecar and end-to-end suites: files
// live in a timestamped directory, "..data" links to it, and each visible
// file is a symlink into "..data". An update writes a new timestamped
// directory, points "..data_tmp" at it and renames that over "..data", so a
// reader never sees a half-written version.
package storetest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

// Dir is a directory kept in kubelet's atomic layout.
type Dir struct {
	// Path is the directory, as mounted into the container.
	Path string
}

// NewDir returns a Dir for path, creating the directory if needed.
func NewDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	return &Dir{Path: path}, nil
}

// Write replaces the directory's whole content with files (name → content),
// atomically, as kubelet does for a Secret or projected volume update. File
// names must be plain names without directories.
func (d *Dir) Write(files map[string][]byte) error {
	for name := range files {
		if name == "" || strings.ContainsRune(name, '/') || strings.HasPrefix(name, "..") {
			return fmt.Errorf("file name %q: want a plain name", name)
		}
	}
	ts, err := os.MkdirTemp(d.Path, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return fmt.Errorf("creating version directory: %w", err)
	}
	// MkdirTemp makes 0700 directories; kubelet's are readable by the Pod's
	// user, which need not be the one writing them.
	if err := os.Chmod(ts, 0o755); err != nil {
		return fmt.Errorf("creating version directory: %w", err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(ts, name), data, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	oldTS, err := os.Readlink(filepath.Join(d.Path, dataDirName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", dataDirName, err)
	}
	tmp := filepath.Join(d.Path, newDataDirName)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", newDataDirName, err)
	}
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return fmt.Errorf("linking %s: %w", newDataDirName, err)
	}
	if err := os.Rename(tmp, filepath.Join(d.Path, dataDirName)); err != nil {
		return fmt.Errorf("swapping %s: %w", dataDirName, err)
	}
	// Visible symlinks: create the new ones, drop the ones no longer in
	// the payload.
	for name := range files {
		link := filepath.Join(d.Path, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataDirName, name), link); err != nil {
			return fmt.Errorf("linking %s: %w", name, err)
		}
	}
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return fmt.Errorf("listing %s: %w", d.Path, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		if _, ok := files[e.Name()]; !ok && e.Type()&os.ModeSymlink != 0 {
			if err := os.Remove(filepath.Join(d.Path, e.Name())); err != nil {
				return fmt.Errorf("removing %s: %w", e.Name(), err)
			}
		}
	}
	if oldTS != "" && oldTS != filepath.Base(ts) {
		if err := os.RemoveAll(filepath.Join(d.Path, oldTS)); err != nil {
			return fmt.Errorf("removing old version %s: %w", oldTS, err)
		}
	}
	return nil
}

// WritePayload writes raw bytes as the payload file, valid or not.
func (d *Dir) WritePayload(raw []byte) error {
	return d.Write(map[string][]byte{payload.SecretKey: raw})
}

// WriteDocument seals doc (setting APIVersion, Kind and Hash) and writes it as
// the payload file.
func (d *Dir) WriteDocument(doc *payload.Document) error {
	raw, err := doc.Seal()
	if err != nil {
		return fmt.Errorf("sealing document: %w", err)
	}
	return d.WritePayload(raw)
}

// WriteDocuments seals doc and shared (see WriteDocument) and writes them in
// one swap as the payload file and, beside it, the shared document, as
// kubelet updates the projected volume that holds both Secrets. A nil shared
// writes the payload file alone. Like every write, it replaces the whole
// directory: a later WriteDocument drops the shared document.
func (d *Dir) WriteDocuments(doc *payload.Document, shared *payload.SharedDocument) error {
	raw, err := doc.Seal()
	if err != nil {
		return fmt.Errorf("sealing document: %w", err)
	}
	files := map[string][]byte{payload.SecretKey: raw}
	if shared != nil {
		if files[payload.SharedKey], err = shared.Seal(); err != nil {
			return fmt.Errorf("sealing shared document: %w", err)
		}
	}
	return d.Write(files)
}

// Versions returns the timestamped version directories present, sorted; after
// a completed update there is exactly one.
func (d *Dir) Versions() ([]string, error) {
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", d.Path, err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "..") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// WriteToken writes token as the projected token for audience below root, in
// the directory payload.TokenPath names, with kubelet's atomic layout.
func WriteToken(root, audience string, token []byte) error {
	d, err := NewDir(filepath.Join(root, payload.TokenVolumeName(audience)))
	if err != nil {
		return err
	}
	return d.Write(map[string][]byte{payload.TokenFileName: token})
}

// JWT returns an unsigned JWT-shaped token whose claims carry aud and exp.
// Only its shape is real: nothing verifies it.
func JWT(audience string, exp time.Time) []byte {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	claims, err := json.Marshal(map[string]any{
		"aud": []string{audience},
		"exp": exp.Unix(),
		"iat": exp.Add(-time.Hour).Unix(),
		"iss": "https://kubernetes.default.svc",
		"sub": "system:serviceaccount:default:default",
	})
	if err != nil {
		// A map of strings and integers always encodes.
		panic(err)
	}
	return []byte(header + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString([]byte("signature")))
}

// Share moves doc's user-data and vendor-data into a new shared document of
// doc's MetadataService (Source.MetadataService) and makes doc refer to it,
// as the operator stores an instance of a service that shares them. The
// document served from the two, by payload.Document.WithShared, has doc's
// former content. Pass both to WriteDocuments.
func Share(doc *payload.Document) *payload.SharedDocument {
	shared := &payload.SharedDocument{MetadataService: doc.Source.MetadataService, UserData: doc.UserData, VendorData: doc.VendorData}
	doc.Shared = &payload.SharedRef{MetadataService: doc.Source.MetadataService}
	doc.UserData, doc.VendorData = nil, nil
	return shared
}

// Document returns a representative unsealed document: every dialect, a
// masquerade primary NIC and a static secondary, SSH keys, user and vendor
// data, and one token audience. Callers adjust it and pass it to
// WriteDocument.
func Document() *payload.Document {
	return &payload.Document{
		Instance: payload.Instance{
			ID:                 "6a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b",
			UID:                "0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f",
			Name:               "vm1",
			Namespace:          "tenant-a",
			Hostname:           "vm1",
			ServiceAccountName: "vm1-sa",
			Tags:               map[string]string{"env": "test"},
			Labels:             map[string]string{"app": "web"},
			Annotations:        map[string]string{"example.com/owner": "team-a"},
			SSHAuthorizedKeys:  []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv3W0UJx8nQ2WTbd6tqhJmUQAKnj4nYVi0DvH7M5J3y user@example"},
		},
		UserData:   []byte("#cloud-config\nhostname: vm1\n"),
		VendorData: []byte("#cloud-config\nruncmd:\n  - [touch, /run/vendor]\n"),
		Network: &payload.Network{
			Interfaces: []payload.Interface{
				{Name: "default", MACAddress: "52:54:00:12:34:56", Binding: "masquerade", Network: "default", PodInterface: "eth0", Bridge: "k6t-eth0", Primary: true, DHCP4: true},
				{Name: "storage", MACAddress: "52:54:00:ab:cd:ef", MTU: 9000, Binding: "bridge", Network: "storage-net", PodInterface: "pod1a2b3c4d5e6", Bridge: "k6t-1a2b3c4d5e6", Addresses: []string{"192.168.50.10/24"}, Routes: []payload.Route{{To: "10.50.0.0/16", Via: "192.168.50.1"}}},
			},
			Nameservers: &payload.Nameservers{Addresses: []string{"10.96.0.10"}, Search: []string{"tenant-a.svc.cluster.local", "svc.cluster.local"}},
		},
		Tokens:   []payload.Token{{Audience: "vault", ExpirationSeconds: 3600, Path: payload.TokenPath("vault")}},
		Dialects: append([]payload.Dialect(nil), payload.AllDialects...),
		Serve:    payload.Serve{Interface: "default", Bridge: "k6t-eth0"},
		Source:   payload.Source{MetadataService: "default"},
	}
}
