package store_test

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/server"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

// waitChanged waits for ch to close, failing after d.
func waitChanged(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

func newDir(t *testing.T) *storetest.Dir {
	t.Helper()
	d, err := storetest.NewDir(filepath.Join(t.TempDir(), "payload"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestLoad(t *testing.T) {
	dir := newDir(t)
	s := store.New(store.Options{PayloadDir: dir.Path}, logr.Discard())

	if _, err := s.Load(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load without a file: %v, want fs.ErrNotExist", err)
	}
	if s.Current() != nil || s.Loaded() {
		t.Fatal("document loaded from nothing")
	}

	doc := storetest.Document()
	if err := dir.WriteDocument(doc); err != nil {
		t.Fatal(err)
	}
	ch := s.Changed()
	changed, err := s.Load()
	if err != nil || !changed {
		t.Fatalf("Load = %v, %v; want true, nil", changed, err)
	}
	waitChanged(t, ch, time.Second, "Changed after the first load")
	if got := s.Current(); got == nil || got.Hash != doc.Hash {
		t.Fatalf("Current = %v, want hash %s", got, doc.Hash)
	}

	// The same content again is no change.
	if changed, err := s.Load(); err != nil || changed {
		t.Fatalf("reloading the same file: %v, %v; want false, nil", changed, err)
	}

	for name, raw := range map[string][]byte{
		"garbage":        []byte("{not json"),
		"wrong hash":     []byte(`{"apiVersion":"` + payload.APIVersion + `","instance":{"id":"x"},"hash":"sha256:00"}`),
		"wrong version":  []byte(`{"apiVersion":"v0","instance":{"id":"x"}}`),
		"empty":          {},
		"no instance id": mustSeal(t, &payload.Document{}),
	} {
		if err := dir.WritePayload(raw); err != nil {
			t.Fatal(err)
		}
		if changed, err := s.Load(); err == nil || changed {
			t.Errorf("%s: Load = %v, %v; want an error", name, changed, err)
		}
		if got := s.Current(); got == nil || got.Hash != doc.Hash {
			t.Errorf("%s: the last good document was dropped", name)
		}
	}
	if st := s.Stats(); st.Reloads != 1 || st.Failures != 6 {
		t.Errorf("Stats = %+v, want 1 reload and 6 failures", st)
	}
}

func mustSeal(t *testing.T, d *payload.Document) []byte {
	t.Helper()
	raw, err := d.Seal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestRunReloadsOnSwap swaps ..data as kubelet does and expects the new
// document within a second, then a broken one (kept out), then a fixed one.
func TestRunReloadsOnSwap(t *testing.T) {
	dir := newDir(t)
	doc := storetest.Document()
	if err := dir.WriteDocument(doc); err != nil {
		t.Fatal(err)
	}
	s := store.New(store.Options{PayloadDir: dir.Path}, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	first := s.Changed()
	go func() { done <- s.Run(ctx) }()
	waitChanged(t, first, 5*time.Second, "the initial load")

	for i, host := range []string{"vm1-renamed", "vm1-again"} {
		ch := s.Changed()
		doc.Instance.Hostname = host
		if err := dir.WriteDocument(doc); err != nil {
			t.Fatal(err)
		}
		waitChanged(t, ch, time.Second, "the swapped document")
		if got := s.Current().Instance.Hostname; got != host {
			t.Fatalf("swap %d: hostname %q, want %q", i, got, host)
		}
		if v, err := dir.Versions(); err != nil || len(v) != 1 {
			t.Fatalf("version directories after the swap: %v, %v", v, err)
		}
	}

	// A broken update keeps the last good document; the next good one is
	// picked up.
	ch := s.Changed()
	if err := dir.WritePayload([]byte("{")); err != nil {
		t.Fatal(err)
	}
	doc.Instance.Hostname = "vm1-fixed"
	if err := dir.WriteDocument(doc); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, ch, time.Second, "the fixed document")
	if got := s.Current().Instance.Hostname; got != "vm1-fixed" {
		t.Fatalf("hostname %q after a broken and a fixed update", got)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v on cancel, want nil", err)
	}
}

// TestRunStartsWithoutFile covers a Secret that is not mounted yet when the
// sidecar starts: the first document arrives later through the watch.
func TestRunStartsWithoutFile(t *testing.T) {
	dir := newDir(t)
	s := store.New(store.Options{PayloadDir: dir.Path}, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := s.Changed()
	go func() { _ = s.Run(ctx) }()
	if s.Current() != nil {
		t.Fatal("document from an empty directory")
	}
	if err := dir.WriteDocument(storetest.Document()); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, ch, 5*time.Second, "the first document")
	if !s.Loaded() {
		t.Fatal("not loaded after Changed")
	}
}

// TestRunPlainWrite covers a payload file written in place rather than by
// kubelet's symlink swap.
func TestRunPlainWrite(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, payload.SecretKey)
	doc := storetest.Document()
	if err := os.WriteFile(file, mustSeal(t, doc), 0o644); err != nil {
		t.Fatal(err)
	}
	s := store.New(store.Options{PayloadDir: root}, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := s.Changed()
	go func() { _ = s.Run(ctx) }()
	waitChanged(t, ch, 5*time.Second, "the initial load")
	ch = s.Changed()
	doc.Instance.ID = "new-id"
	if err := os.WriteFile(file, mustSeal(t, doc), 0o644); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, ch, time.Second, "the rewritten file")
	if got := s.Current().Instance.ID; got != "new-id" {
		t.Fatalf("instance id %q", got)
	}
}

func TestToken(t *testing.T) {
	dir := newDir(t)
	tokens := t.TempDir()
	doc := storetest.Document()
	doc.Tokens = append(doc.Tokens,
		payload.Token{Audience: "missing", Path: payload.TokenPath("missing")},
		payload.Token{Audience: "escape", Path: "../../etc/passwd"},
	)
	if err := dir.WriteDocument(doc); err != nil {
		t.Fatal(err)
	}
	s := store.New(store.Options{PayloadDir: dir.Path, TokenDir: tokens}, logr.Discard())
	if _, err := s.Token("vault"); !errors.Is(err, store.ErrNotLoaded) {
		t.Fatalf("Token before load: %v", err)
	}
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"first", "second"} {
		if err := storetest.WriteToken(tokens, "vault", []byte(want+"\n")); err != nil {
			t.Fatal(err)
		}
		got, err := s.Token("vault")
		if err != nil || string(got) != want {
			t.Fatalf("rotation %d: Token = %q, %v; want %q", i, got, err, want)
		}
	}
	if _, err := s.Token("nope"); !errors.Is(err, store.ErrUnknownAudience) {
		t.Errorf("unknown audience: %v", err)
	}
	if _, err := s.Token("missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := s.Token("escape"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("path leaving the token directory: %v", err)
	}
	if got := s.Audiences(); len(got) != 3 || got[0] != "vault" {
		t.Errorf("Audiences = %v", got)
	}
}

// TestServesDocumentsOfAdjacentVersions: during an upgrade the sidecar of one
// operator version reads payloads the next (or the previous) one wrote. The
// fixtures are api/payload's: a document with fields this version does not
// know at several levels, and one the operator wrote before the hash covered
// the stored bytes. Both load through kubelet's layout and are served.
func TestServesDocumentsOfAdjacentVersions(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		paths   map[string]string // path → a string its body contains
	}{
		{"future-v1.json", map[string]string{
			"/nocloud/meta-data":               "instance-id: 6a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b",
			"/nocloud/user-data":               "hostname: vm1",
			"/nocloud/network-config":          "52:54:00:12:34:56",
			"/openstack/latest/meta_data.json": `"uuid":"6a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b"`,
			"/latest/meta-data/local-hostname": "vm1",
			"/v1/identity":                     `"instanceId":"6a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b"`,
			"/v1/network-config?format=v2":     "52:54:00:12:34:56",
		}},
		{"older-v1.json", map[string]string{
			"/nocloud/meta-data":           "instance-id: 6a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b",
			"/nocloud/vendor-data":         "/run/vendor",
			"/v1/identity":                 `"serviceAccountName":"vm1-sa"`,
			"/v1/network-config?format=v2": "192.168.50.10/24",
		}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("..", "..", "api", "payload", "testdata", tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			dir := newDir(t)
			if err := dir.WritePayload(raw); err != nil {
				t.Fatal(err)
			}
			s := store.New(store.Options{PayloadDir: dir.Path}, logr.Discard())
			if changed, err := s.Load(); err != nil || !changed {
				t.Fatalf("Load = %v, %v; want the document loaded", changed, err)
			}
			srv, err := server.New(server.Config{Store: s, Log: logr.Discard()})
			if err != nil {
				t.Fatal(err)
			}
			for p, want := range tc.paths {
				req := httptest.NewRequest(http.MethodGet, "http://169.254.169.254"+p, nil)
				req.Header.Set("Metadata", "true")
				w := httptest.NewRecorder()
				srv.Handler().ServeHTTP(w, req)
				if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), want) {
					t.Errorf("GET %s: %d %q, want 200 with %q", p, w.Code, w.Body.String(), want)
				}
			}
		})
	}
}

// TestLoadShared walks a document that leaves its user-data and vendor-data to
// its service's shared document through the updates a sidecar sees: the two
// are served as one document whose hash follows both files; a shared
// document that is missing, invalid or another service's is a failure that
// keeps the last good document and is reported once while the files stay as
// they are; a document holding its own user-data ignores shared.json.
func TestLoadShared(t *testing.T) {
	dir := newDir(t)
	s := store.New(store.Options{PayloadDir: dir.Path}, logr.Discard())
	doc := storetest.Document()
	shared := storetest.Share(doc)
	other := &payload.SharedDocument{MetadataService: "other", UserData: []byte("#cloud-config\nhostname: other\n")}
	payloadOnly := func() error { return dir.Write(map[string][]byte{payload.SecretKey: mustSeal(t, doc)}) }
	withShared := func(raw []byte) func() error {
		return func() error {
			return dir.Write(map[string][]byte{payload.SecretKey: mustSeal(t, doc), payload.SharedKey: raw})
		}
	}

	type step struct {
		name    string
		write   func() error
		changed bool
		fails   bool
		errs    []error // what the error must wrap, all of them
		serves  string  // a string the served user-data contains
	}
	for i, st := range []step{
		{name: "both files", write: func() error { return dir.WriteDocuments(doc, shared) }, changed: true, serves: "hostname: vm1"},
		{name: "the same files again"},
		{name: "only shared.json edited", write: func() error {
			shared.UserData = []byte("#cloud-config\nhostname: edited\n")
			return dir.WriteDocuments(doc, shared)
		}, changed: true, serves: "hostname: edited"},
		{name: "shared.json gone", write: payloadOnly, fails: true, errs: []error{payload.ErrSharedMissing, fs.ErrNotExist}},
		{name: "shared.json still gone"},
		{name: "a new payload, shared.json still gone", write: func() error {
			doc.Instance.Hostname = "vm1-renamed"
			return payloadOnly()
		}, fails: true, errs: []error{payload.ErrSharedMissing, fs.ErrNotExist}},
		{name: "another service's shared.json", write: func() error { return dir.WriteDocuments(doc, other) }, fails: true, errs: []error{payload.ErrSharedMissing}},
		{name: "another service's shared.json again"},
		{name: "invalid shared.json", write: withShared([]byte(`{"kind":"SharedPayload"}`)), fails: true},
		{name: "invalid shared.json again"},
		{name: "a good shared.json again", write: func() error {
			shared.UserData = []byte("#cloud-config\nhostname: fixed\n")
			return dir.WriteDocuments(doc, shared)
		}, changed: true, serves: "hostname: fixed"},
		{name: "a document with its own user-data beside an invalid shared.json", write: func() error {
			doc = storetest.Document()
			return withShared([]byte("{not json"))()
		}, changed: true, serves: "hostname: vm1"},
		{name: "that again"},
	} {
		if st.write != nil {
			if err := st.write(); err != nil {
				t.Fatalf("step %d (%s): %v", i, st.name, err)
			}
		}
		before := s.Current()
		ch := s.Changed()
		changed, err := s.Load()
		if (err != nil) != st.fails || changed != st.changed {
			t.Fatalf("step %d (%s): Load = %v, %v; want changed %v, failure %v", i, st.name, changed, err, st.changed, st.fails)
		}
		for _, want := range st.errs {
			if !errors.Is(err, want) {
				t.Errorf("step %d (%s): Load error %v does not wrap %v", i, st.name, err, want)
			}
		}
		cur := s.Current()
		if !st.changed {
			if cur != before {
				t.Fatalf("step %d (%s): the current document was replaced", i, st.name)
			}
			select {
			case <-ch:
				t.Fatalf("step %d (%s): Changed closed without a change", i, st.name)
			default:
			}
			continue
		}
		waitChanged(t, ch, time.Second, st.name)
		if before != nil && cur.Hash == before.Hash {
			t.Errorf("step %d (%s): a new document with the same hash %s", i, st.name, cur.Hash)
		}
		if !strings.Contains(string(cur.UserData), st.serves) {
			t.Errorf("step %d (%s): user-data %q, want it to contain %q", i, st.name, cur.UserData, st.serves)
		}
		if cur.Shared != nil && (string(cur.VendorData) != string(shared.VendorData) || cur.Hash == doc.Hash || cur.Hash == shared.Hash) {
			t.Errorf("step %d (%s): served vendor-data %q and hash %s; want the shared document's vendor-data and a hash of both (document %s, shared %s)",
				i, st.name, cur.VendorData, cur.Hash, doc.Hash, shared.Hash)
		}
		if cur.Shared == nil && cur.Hash != doc.Hash {
			t.Errorf("step %d (%s): hash %s, want the document's own %s", i, st.name, cur.Hash, doc.Hash)
		}
	}
	if st := s.Stats(); st.Reloads != 4 || st.Failures != 4 {
		t.Errorf("Stats = %+v, want 4 reloads and 4 failures", st)
	}
}

// TestServesSharedDocument: the server answers with the shared document's
// user-data, and an edit of shared.json alone changes the ETag.
func TestServesSharedDocument(t *testing.T) {
	dir := newDir(t)
	doc := storetest.Document()
	shared := storetest.Share(doc)
	if err := dir.WriteDocuments(doc, shared); err != nil {
		t.Fatal(err)
	}
	s := store.New(store.Options{PayloadDir: dir.Path}, logr.Discard())
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: s, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	get := func(want string) string {
		t.Helper()
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://169.254.169.254/nocloud/user-data", nil))
		if w.Code != http.StatusOK || w.Body.String() != want {
			t.Fatalf("GET /nocloud/user-data: %d %q, want 200 %q", w.Code, w.Body.String(), want)
		}
		return w.Header().Get("ETag")
	}
	etag := get(string(shared.UserData))
	shared.UserData = []byte("#cloud-config\nhostname: edited\n")
	if err := dir.WriteDocuments(doc, shared); err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Load(); err != nil || !changed {
		t.Fatalf("Load after a shared.json edit = %v, %v; want true, nil", changed, err)
	}
	if again := get(string(shared.UserData)); again == etag {
		t.Errorf("ETag %q unchanged after an edit of shared.json", etag)
	}
}

// TestRunReloadsSharedEdit: a kubelet swap that changes only shared.json is
// picked up through the watch like one of payload.json.
func TestRunReloadsSharedEdit(t *testing.T) {
	dir := newDir(t)
	doc := storetest.Document()
	shared := storetest.Share(doc)
	if err := dir.WriteDocuments(doc, shared); err != nil {
		t.Fatal(err)
	}
	s := store.New(store.Options{PayloadDir: dir.Path}, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	first := s.Changed()
	go func() { done <- s.Run(ctx) }()
	waitChanged(t, first, 5*time.Second, "the initial load")

	for _, host := range []string{"edited", "edited-again"} {
		ch := s.Changed()
		shared.UserData = []byte("#cloud-config\nhostname: " + host + "\n")
		if err := dir.WriteDocuments(doc, shared); err != nil {
			t.Fatal(err)
		}
		waitChanged(t, ch, time.Second, "the swapped shared document")
		if got := string(s.Current().UserData); got != string(shared.UserData) {
			t.Fatalf("user-data %q, want %q", got, shared.UserData)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v on cancel, want nil", err)
	}
	if st := s.Stats(); st.Reloads != 3 || st.Failures != 0 {
		t.Errorf("Stats = %+v, want 3 reloads and no failure", st)
	}
}
