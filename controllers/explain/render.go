package explain

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/server"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
)

// Dialect is a metadata API as a user names it on the command line.
type Dialect string

// The dialects Render knows.
const (
	DialectNoCloud   Dialect = "nocloud"
	DialectOpenStack Dialect = "openstack"
	DialectEC2       Dialect = "ec2"
	DialectV1        Dialect = "v1"
)

// Dialects lists the dialects in the order the help text gives them.
var Dialects = []Dialect{DialectNoCloud, DialectOpenStack, DialectEC2, DialectV1}

// dialectOf is how one dialect is crawled.
type dialectOf struct {
	// enabledBy are the payload dialects that make the sidecar serve it (any
	// one): the EC2 tree is served with the ec2 dialect and, as nova serves
	// it, with the OpenStack one.
	enabledBy []payload.Dialect
	// root is the listing the crawl starts from.
	root string
	// rootDirs are entries of root's listing that are directories although
	// listed without a trailing '/': EC2 lists its version root that way.
	rootDirs []string
	// header is sent with every request (/v1 requires Metadata: true).
	header http.Header
	// skip are listed entries that are not shown: /v1/token would need the
	// guest's ServiceAccount token files, which the plugin never reads.
	skip []string
}

func dialectSpec(d Dialect) (dialectOf, error) {
	switch d {
	case DialectNoCloud:
		return dialectOf{enabledBy: []payload.Dialect{payload.DialectNoCloud}, root: "/nocloud/"}, nil
	case DialectOpenStack:
		return dialectOf{enabledBy: []payload.Dialect{payload.DialectOpenStack}, root: "/openstack/latest/"}, nil
	case DialectEC2:
		return dialectOf{enabledBy: []payload.Dialect{payload.DialectEC2, payload.DialectOpenStack}, root: "/latest/",
			rootDirs: []string{"meta-data", "dynamic"}}, nil
	case DialectV1:
		return dialectOf{enabledBy: []payload.Dialect{payload.DialectV1}, root: "/v1/", header: http.Header{"Metadata": {"true"}}, skip: []string{"token"}}, nil
	}
	return dialectOf{}, fmt.Errorf("--dialect %q: want one of %s", d, strings.Join(dialectNames(), ", "))
}

func dialectNames() []string {
	out := make([]string, 0, len(Dialects))
	for _, d := range Dialects {
		out = append(out, string(d))
	}
	return out
}

// DefaultDialect is the dialect the guest of a VMI served by mds most likely
// reads: the one its guest discovery points cloud-init at, else /v1.
func DefaultDialect(mds *imdsv1alpha1.MetadataService) Dialect {
	switch mds.Spec.GuestDiscovery {
	case imdsv1alpha1.GuestDiscoveryOpenStack:
		return DialectOpenStack
	case imdsv1alpha1.GuestDiscoveryEC2:
		return DialectEC2
	case imdsv1alpha1.GuestDiscoveryNone:
		return DialectV1
	}
	return DialectNoCloud
}

// File is one file of a dialect as the sidecar serves it.
type File struct {
	// Path is the path a guest requests from http://169.254.169.254.
	Path string
	// ContentType is the response's Content-Type.
	ContentType string
	// Body is the response body, byte for byte.
	Body []byte
}

// maxFiles bounds a crawl: every dialect has a few dozen files at most, and
// a listing that led further would be a bug, not a reason to loop.
const maxFiles = 500

// Render serves the payload document raw (a payload Secret's payload.json)
// with the sidecar's own server, in memory, and returns every file of
// dialect that the server's listings lead to, in crawl order. Tokens are
// left out: rendering them needs the guest's token files.
//
// shared is the shared document of the instance's MetadataService (its
// shared payload Secret's shared.json), placed beside raw as the Pod mounts
// it; nil when raw holds its own user-data. A document that refers to one
// (payload.Document.Shared) fails to render without it, or with another
// service's, with an error wrapping payload.ErrSharedMissing: the sidecar
// would keep serving its last good document then.
func Render(ctx context.Context, raw []byte, dialect Dialect, shared []byte) ([]File, error) {
	spec, err := dialectSpec(dialect)
	if err != nil {
		return nil, err
	}
	// The sidecar's store reads a mounted Secret; give it one.
	dir, err := os.MkdirTemp("", "kubectl-imds-")
	if err != nil {
		return nil, fmt.Errorf("creating a directory for the payload: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := os.WriteFile(filepath.Join(dir, payload.SecretKey), raw, 0o600); err != nil {
		return nil, fmt.Errorf("writing the payload: %w", err)
	}
	if shared != nil {
		if err := os.WriteFile(filepath.Join(dir, payload.SharedKey), shared, 0o600); err != nil {
			return nil, fmt.Errorf("writing the shared payload: %w", err)
		}
	}
	st := store.New(store.Options{PayloadDir: dir, TokenDir: filepath.Join(dir, "no-tokens")}, logr.Discard())
	if _, err := st.Load(); err != nil {
		return nil, err
	}
	srv, err := server.New(server.Config{Store: st, Log: logr.Discard()})
	if err != nil {
		return nil, err
	}
	get := func(p string) (*httptest.ResponseRecorder, error) {
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://"+server.Address+p, nil)
		for k, v := range spec.header {
			req.Header[k] = v
		}
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			return nil, fmt.Errorf("GET %s: the sidecar answers %d: %s", p, w.Code, strings.TrimSpace(w.Body.String()))
		}
		return w, nil
	}

	var files []File
	queue := []string{spec.root}
	for len(queue) > 0 && len(files) < maxFiles {
		p := queue[0]
		queue = queue[1:]
		w, err := get(p)
		if err != nil {
			return nil, err
		}
		if !strings.HasSuffix(p, "/") {
			files = append(files, File{Path: p, ContentType: w.Header().Get("Content-Type"), Body: w.Body.Bytes()})
			continue
		}
		for _, entry := range strings.Split(w.Body.String(), "\n") {
			if entry == "" || slices.Contains(spec.skip, entry) {
				continue
			}
			if name, _, ok := strings.Cut(entry, "="); ok {
				// EC2 lists public keys as <index>=<name>; the key lives
				// under <index>/.
				entry = name + "/"
			}
			if p == spec.root && slices.Contains(spec.rootDirs, entry) {
				entry += "/"
			}
			queue = append(queue, p+entry)
		}
	}
	return files, nil
}
