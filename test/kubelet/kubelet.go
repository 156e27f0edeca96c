// Package kubelet plays kubelet for the containers of a Pod in tests that run
// a real API server (envtest) but no kubelet: it materialises the volumes a
// container mounts (Secret, ConfigMap, downward API, emptyDir and projected
// volumes, with ServiceAccount tokens from the TokenRequest API) in kubelet's
// atomic-writer layout, keeps them fresh as kubelet does, and builds the
// command that runs the container's process inside a network namespace with
// the container's environment and capabilities.
//
// Volumes live below Config.Root in kubelet's own layout:
// <Root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>. There is no
// container root file system: Command runs the process on the host's, in a
// private mount namespace, with the container's mountPaths rewritten to a
// stand-in root of symlinks to those volumes (see Command). Downward API
// values come from the Pod as passed to MountVolumes and Command; they do not
// follow later changes to the Pod.
//
// Typical use:
//
//	kl := kubelet.New(kubelet.Config{Client: clientset, Root: dir, Log: log,
//		Executables: map[string]string{"/kubevirt-imds-sidecar": builtSidecar}})
//	vols, err := kl.MountVolumes(ctx, pod, "kubevirt-imds")
//	go kl.Run(ctx)
//	cmd, err := kl.Command(ctx, pod, "kubevirt-imds", vols, podNS)
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// Config configures a Kubelet.
type Config struct {
	// Client talks to the API server: it reads Secrets and ConfigMaps and
	// requests ServiceAccount tokens.
	Client kubernetes.Interface
	// Root is the directory below which volumes (and the containers'
	// stand-in root file systems, see Command) are materialised.
	Root string
	// Log receives what kubelet would log: refreshes and failures.
	Log logr.Logger
	// Executables maps a container command's first element, a path in the
	// container's image, to a host executable. There are no images here;
	// commands not listed run as named, from the host's PATH.
	Executables map[string]string
}

// Kubelet materialises and refreshes the volumes of Pods' containers.
type Kubelet struct {
	cfg Config

	mu      sync.Mutex
	volumes map[string]*volume // by host directory
	runCtx  context.Context    // set while Run runs
	wg      sync.WaitGroup
}

// New returns a Kubelet; nothing happens until MountVolumes or Run.
func New(cfg Config) *Kubelet {
	return &Kubelet{cfg: cfg, volumes: map[string]*volume{}}
}

// objectKind is the kind of an object a volume projects.
type objectKind string

const (
	kindSecret    objectKind = "Secret"
	kindConfigMap objectKind = "ConfigMap"
)

// objectRef names an object a volume projects.
type objectRef struct {
	kind      objectKind
	namespace string
	name      string
}

func (r objectRef) String() string { return fmt.Sprintf("%s %s/%s", r.kind, r.namespace, r.name) }

// missingError means a non-optional object a volume projects does not exist
// (or lacks a key): kubelet keeps the Pod waiting rather than start it
// without.
type missingError struct {
	ref objectRef
	key string
}

func (e *missingError) Error() string {
	if e.key != "" {
		return fmt.Sprintf("%s has no key %q", e.ref, e.key)
	}
	return fmt.Sprintf("%s does not exist", e.ref)
}

// lookupFunc returns an object's data (Secret data, or ConfigMap data and
// binaryData) and whether it exists.
type lookupFunc func(ctx context.Context, ref objectRef) (map[string][]byte, bool, error)

// volume is one materialised volume of one Pod.
type volume struct {
	pod  *corev1.Pod
	spec corev1.Volume
	// container is the container it was mounted for, for resourceFieldRef
	// items that do not name one.
	container string
	dir       string
	refs      []objectRef

	mu      sync.Mutex // serialises renders and writes
	written map[string]file
	mounted bool
	tokens  map[int]*token // by projected source index
}

// MountVolumes materialises every volume that containerName (a container or
// init container of pod) mounts and returns each volumeMount's mountPath
// mapped to the host directory holding it. Like kubelet it waits for a
// non-optional Secret or ConfigMap that does not exist yet, until ctx ends;
// an optional one gives an empty directory, filled by Run once it appears.
// The Pod must exist in the API server when it has token projections: the
// tokens are bound to it.
func (k *Kubelet) MountVolumes(ctx context.Context, pod *corev1.Pod, containerName string) (map[string]string, error) {
	c, err := findContainer(pod, containerName)
	if err != nil {
		return nil, err
	}
	specs := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		specs[v.Name] = v
	}
	out := map[string]string{}
	for _, m := range c.VolumeMounts {
		spec, ok := specs[m.Name]
		if !ok {
			return nil, fmt.Errorf("container %s mounts volume %q, which the Pod does not have", containerName, m.Name)
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			return nil, fmt.Errorf("volume mount %s: subPath is not supported", m.Name)
		}
		v, err := k.volume(pod, spec, containerName)
		if err != nil {
			return nil, err
		}
		if err := k.mount(ctx, v); err != nil {
			return nil, err
		}
		out[m.MountPath] = v.dir
	}
	return out, nil
}

// volume returns the registered volume for spec, creating it.
func (k *Kubelet) volume(pod *corev1.Pod, spec corev1.Volume, container string) (*volume, error) {
	plugin, refs, err := describe(pod.Namespace, spec)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(k.cfg.Root, "pods", string(pod.UID), "volumes", "kubernetes.io~"+plugin, spec.Name)
	k.mu.Lock()
	defer k.mu.Unlock()
	if v, ok := k.volumes[dir]; ok {
		return v, nil
	}
	v := &volume{pod: pod.DeepCopy(), spec: spec, container: container, dir: dir, refs: refs, tokens: map[int]*token{}}
	k.volumes[dir] = v
	return v, nil
}

// describe returns a volume's kubelet plugin name and the objects it
// projects.
func describe(ns string, spec corev1.Volume) (string, []objectRef, error) {
	switch s := spec.VolumeSource; {
	case s.Secret != nil:
		return "secret", []objectRef{{kindSecret, ns, s.Secret.SecretName}}, nil
	case s.ConfigMap != nil:
		return "configmap", []objectRef{{kindConfigMap, ns, s.ConfigMap.Name}}, nil
	case s.DownwardAPI != nil:
		return "downward-api", nil, nil
	case s.EmptyDir != nil:
		return "empty-dir", nil, nil
	case s.Projected != nil:
		var refs []objectRef
		for _, p := range s.Projected.Sources {
			switch {
			case p.Secret != nil:
				refs = append(refs, objectRef{kindSecret, ns, p.Secret.Name})
			case p.ConfigMap != nil:
				refs = append(refs, objectRef{kindConfigMap, ns, p.ConfigMap.Name})
			case p.DownwardAPI != nil, p.ServiceAccountToken != nil:
			default:
				return "", nil, fmt.Errorf("volume %s: only secret, configMap, downwardAPI and serviceAccountToken projections are supported", spec.Name)
			}
		}
		return "projected", refs, nil
	}
	return "", nil, fmt.Errorf("volume %s: only secret, configMap, downwardAPI, emptyDir and projected volumes are supported", spec.Name)
}

// mount writes v's first content, waiting for missing non-optional objects,
// and hands it to Run's refresh loop if Run is running.
func (k *Kubelet) mount(ctx context.Context, v *volume) error {
	v.mu.Lock()
	mounted := v.mounted
	v.mu.Unlock()
	if mounted {
		return nil
	}
	if v.spec.EmptyDir != nil {
		if err := os.MkdirAll(v.dir, 0o777); err != nil {
			return fmt.Errorf("creating emptyDir %s: %w", v.spec.Name, err)
		}
		// Writable by any container user, as kubelet's emptyDirs are.
		if err := os.Chmod(v.dir, 0o777); err != nil {
			return fmt.Errorf("creating emptyDir %s: %w", v.spec.Name, err)
		}
	} else {
		for {
			_, err := k.update(ctx, v, k.get)
			var missing *missingError
			if !errors.As(err, &missing) {
				if err != nil {
					return fmt.Errorf("mounting volume %s: %w", v.spec.Name, err)
				}
				break
			}
			k.cfg.Log.Info("waiting for a projected object", "volume", v.spec.Name, "reason", missing.Error())
			if err := k.waitForChange(ctx, missing); err != nil {
				return fmt.Errorf("mounting volume %s: %w: %w", v.spec.Name, missing, err)
			}
		}
	}
	// Marked under k.mu, which Run holds while it starts the loops of
	// mounted volumes: each volume gets exactly one loop.
	k.mu.Lock()
	defer k.mu.Unlock()
	v.mu.Lock()
	already := v.mounted
	v.mounted = true
	v.mu.Unlock()
	if !already && k.runCtx != nil && v.spec.EmptyDir == nil {
		k.startLocked(v)
	}
	return nil
}

// get reads an object straight from the API server.
func (k *Kubelet) get(ctx context.Context, ref objectRef) (map[string][]byte, bool, error) {
	switch ref.kind {
	case kindSecret:
		s, err := k.cfg.Client.CoreV1().Secrets(ref.namespace).Get(ctx, ref.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading %s: %w", ref, err)
		}
		return secretData(s), true, nil
	default:
		cm, err := k.cfg.Client.CoreV1().ConfigMaps(ref.namespace).Get(ctx, ref.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading %s: %w", ref, err)
		}
		return configMapData(cm), true, nil
	}
}

func secretData(s *corev1.Secret) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range s.Data {
		out[k] = v
	}
	// stringData is write-only on a real server, but a fake may keep it.
	for k, v := range s.StringData {
		out[k] = []byte(v)
	}
	return out
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range cm.Data {
		out[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		out[k] = v
	}
	return out
}

// listWatch lists and watches the one object ref names.
func (k *Kubelet) listWatch(ref objectRef) (*cache.ListWatch, runtime.Object) {
	byName := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ref.name).String()
	}
	if ref.kind == kindSecret {
		return cache.NewFilteredListWatchFromClient(k.cfg.Client.CoreV1().RESTClient(), "secrets", ref.namespace, byName), &corev1.Secret{}
	}
	return cache.NewFilteredListWatchFromClient(k.cfg.Client.CoreV1().RESTClient(), "configmaps", ref.namespace, byName), &corev1.ConfigMap{}
}

// waitForChange returns once the object missing names exists and has the
// key it lacked: a watch, not a poll.
func (k *Kubelet) waitForChange(ctx context.Context, missing *missingError) error {
	ref := missing.ref
	lw, obj := k.listWatch(ref)
	satisfied := func(o any) bool {
		var data map[string][]byte
		switch o := o.(type) {
		case *corev1.Secret:
			data = secretData(o)
		case *corev1.ConfigMap:
			data = configMapData(o)
		default:
			return false
		}
		_, ok := data[missing.key]
		return missing.key == "" || ok
	}
	_, err := watchtools.UntilWithSync(ctx, lw, obj,
		func(s cache.Store) (bool, error) {
			// The object may have been fixed between the read and the
			// watch: then there is nothing to wait for.
			for _, o := range s.List() {
				if satisfied(o) {
					return true, nil
				}
			}
			return false, nil
		},
		func(ev watch.Event) (bool, error) {
			return (ev.Type == watch.Added || ev.Type == watch.Modified) && satisfied(ev.Object), nil
		})
	if err != nil {
		return fmt.Errorf("watching %s: %w", ref, err)
	}
	return nil
}

// Run keeps every mounted volume fresh until ctx ends: Secret and ConfigMap
// content follows the objects (watched), tokens are replaced when kubelet
// would (see RefreshAt). Volumes mounted while Run runs join in. Run returns
// once all its loops have stopped.
func (k *Kubelet) Run(ctx context.Context) error {
	k.mu.Lock()
	if k.runCtx != nil {
		k.mu.Unlock()
		return errors.New("kubelet: Run is already running")
	}
	k.runCtx = ctx
	for _, v := range k.volumes {
		v.mu.Lock()
		mounted := v.mounted
		v.mu.Unlock()
		if mounted && v.spec.EmptyDir == nil {
			k.startLocked(v)
		}
	}
	k.mu.Unlock()
	<-ctx.Done()
	k.wg.Wait()
	k.mu.Lock()
	k.runCtx = nil
	k.mu.Unlock()
	return nil
}

// startLocked starts v's refresh loop; k.mu must be held and Run running.
func (k *Kubelet) startLocked(v *volume) {
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		k.keepFresh(k.runCtx, v)
	}()
}

// keepFresh rewrites v whenever an object it projects changes or a token is
// due, until ctx ends.
func (k *Kubelet) keepFresh(ctx context.Context, v *volume) {
	log := k.cfg.Log.WithValues("pod", v.pod.Namespace+"/"+v.pod.Name, "volume", v.spec.Name)
	poke := make(chan struct{}, 1)
	notify := func() {
		select {
		case poke <- struct{}{}:
		default:
		}
	}
	stores := map[objectRef]cache.Store{}
	var synced []cache.InformerSynced
	for _, ref := range v.refs {
		if _, ok := stores[ref]; ok {
			continue
		}
		lw, obj := k.listWatch(ref)
		store, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
			ListerWatcher: lw,
			ObjectType:    obj,
			Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    func(any) { notify() },
				UpdateFunc: func(any, any) { notify() },
				DeleteFunc: func(any) { notify() },
			},
		})
		stores[ref] = store
		synced = append(synced, ctrl.HasSynced)
		go ctrl.RunWithContext(ctx)
	}
	// Until the caches hold the objects, a missing one would read as
	// deleted.
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	lookup := func(_ context.Context, ref objectRef) (map[string][]byte, bool, error) {
		o, ok, err := stores[ref].GetByKey(ref.namespace + "/" + ref.name)
		if err != nil || !ok {
			return nil, false, err
		}
		switch o := o.(type) {
		case *corev1.Secret:
			return secretData(o), true, nil
		case *corev1.ConfigMap:
			return configMapData(o), true, nil
		}
		return nil, false, fmt.Errorf("%s: unexpected %T in cache", ref, o)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	retry := time.Second
	for {
		next, err := k.update(ctx, v, lookup)
		var missing *missingError
		switch {
		case ctx.Err() != nil:
			return
		case errors.As(err, &missing):
			// Kubelet keeps the last content when a projected object
			// goes away; it comes back through the watch.
			log.Info("keeping the volume's content", "reason", missing.Error())
		case err != nil:
			log.Error(err, "refreshing the volume failed; retrying", "in", retry)
			next = time.Now().Add(retry)
			retry = min(2*retry, time.Minute)
		default:
			retry = time.Second
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		var tick <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-poke:
		case <-tick:
		}
	}
}

// update renders v and writes it if it changed. It returns when the next
// token is due (zero without tokens).
func (k *Kubelet) update(ctx context.Context, v *volume, lookup lookupFunc) (time.Time, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	files, next, err := k.render(ctx, v, lookup)
	if err != nil {
		return next, err
	}
	if v.written != nil && equalFiles(files, v.written) {
		return next, nil
	}
	if err := writeAtomic(v.dir, files); err != nil {
		return next, fmt.Errorf("writing volume %s: %w", v.spec.Name, err)
	}
	k.cfg.Log.V(1).Info("wrote volume", "pod", v.pod.Namespace+"/"+v.pod.Name, "volume", v.spec.Name, "files", len(files))
	v.written = files
	return next, nil
}

// findContainer returns pod's container or init container named name.
func findContainer(pod *corev1.Pod, name string) (*corev1.Container, error) {
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i], nil
			}
		}
	}
	return nil, fmt.Errorf("pod %s/%s has no container %q", pod.Namespace, pod.Name, name)
}
