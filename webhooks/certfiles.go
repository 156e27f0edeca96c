package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/renameio/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
)

// The serving certificate's file names: cert-controller's defaults and the
// webhook server's.
const (
	certFileName = "tls.crt"
	keyFileName  = "tls.key"
)

// certFilesResync is how often the writer looks at the Secret again when
// nothing changed, so that a failed write is retried.
const certFilesResync = time.Minute

// certFileWriter writes the serving certificate from the rotator's Secret
// into the webhook server's certificate directory.
//
// The rotator reports ready only once the certificate is a file in that
// directory. With the Secret mounted as a volume, that waited for the
// kubelet, which refreshes a Secret volume on its periodic Pod sync (about a
// minute), and then for the rotator's back-off between looks (1, 2, 4 … 64 s):
// the operator served its webhooks about two minutes after it started, and a
// rotated certificate reached the server as late. The manager now writes the
// files itself, from a watch of that one Secret, as soon as the rotator has
// written it.
type certFileWriter struct {
	secrets kubernetes.Interface
	key     types.NamespacedName
	dir     string
	log     logr.Logger
}

// newCertFileWriter returns a writer of the certificate in the Secret key
// into dir, reading with mgr's configuration.
func newCertFileWriter(mgr ctrl.Manager, key types.NamespacedName, dir string) (*certFileWriter, error) {
	cs, err := kubernetes.NewForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return nil, fmt.Errorf("a client for the webhook certificate Secret: %w", err)
	}
	return &certFileWriter{
		secrets: cs,
		key:     key,
		dir:     dir,
		log:     mgr.GetLogger().WithName("webhook-cert-files"),
	}, nil
}

// NeedLeaderElection is false: every replica serves the webhooks, from its
// own directory.
func (*certFileWriter) NeedLeaderElection() bool { return false }

// Start watches the Secret (by name: the rights are list and watch on the
// namespace's Secrets) and writes its certificate until ctx ends.
func (w *certFileWriter) Start(ctx context.Context) error {
	lw := toolscache.NewListWatchFromClient(w.secrets.CoreV1().RESTClient(), "secrets", w.key.Namespace,
		fields.OneTermEqualSelector("metadata.name", w.key.Name))
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	write := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		changed, err := writeCertFiles(w.dir, s.Data)
		switch {
		case errors.Is(err, syscall.EROFS):
			// An older manifest still mounts the Secret here: the
			// kubelet writes the files, as before.
			w.log.Info("the certificate directory is read-only, so the kubelet keeps it (a mounted Secret)", "dir", w.dir)
			stop()
		case err != nil:
			w.log.Error(err, "writing the webhook certificate", "dir", w.dir)
		case changed:
			w.log.Info("wrote the webhook certificate", "dir", w.dir, "secret", w.key.String())
		}
	}
	logger := w.log
	_, informer := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		Logger:        &logger,
		ListerWatcher: lw,
		ObjectType:    &corev1.Secret{},
		ResyncPeriod:  certFilesResync,
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc:    write,
			UpdateFunc: func(_, obj any) { write(obj) },
		},
	})
	informer.RunWithContext(ctx)
	return nil
}

// writeCertFiles writes the key and certificate in data into dir, each
// replaced in one rename (a reader sees the old file or the new, never
// part), key first (the server loads the pair when either
// changes, and takes a new key only with its certificate). It writes nothing
// while data lacks either, and reports whether a file changed. Only the
// serving pair is written: the CA's key stays in the Secret.
func writeCertFiles(dir string, data map[string][]byte) (changed bool, err error) {
	if len(data[keyFileName]) == 0 || len(data[certFileName]) == 0 {
		return false, nil
	}
	for _, name := range []string{keyFileName, certFileName} {
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data[name]) {
			continue
		}
		if err := renameio.WriteFile(path, data[name], 0o600, renameio.WithTempDir(dir)); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}
