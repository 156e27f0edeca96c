package kubelet

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// defaultFileMode is the API's default for Secret, ConfigMap, downward API
// and projected volumes.
const defaultFileMode = fs.FileMode(0o644)

func modeOr(m *int32, def fs.FileMode) fs.FileMode {
	if m == nil {
		return def
	}
	return fs.FileMode(*m) & fs.ModePerm
}

// render computes v's files. Tokens are reused until due; the earliest due
// time is returned.
func (k *Kubelet) render(ctx context.Context, v *volume, lookup lookupFunc) (map[string]file, time.Time, error) {
	files := map[string]file{}
	var next time.Time
	put := func(add map[string]file) error {
		for p, f := range add {
			if _, dup := files[p]; dup {
				return fmt.Errorf("volume %s: two sources write %q", v.spec.Name, p)
			}
			files[p] = f
		}
		return nil
	}
	ns := v.pod.Namespace
	switch s := v.spec.VolumeSource; {
	case s.Secret != nil:
		add, err := project(ctx, lookup, objectRef{kindSecret, ns, s.Secret.SecretName}, s.Secret.Items, modeOr(s.Secret.DefaultMode, defaultFileMode), isTrue(s.Secret.Optional))
		if err != nil {
			return nil, next, err
		}
		return add, next, nil
	case s.ConfigMap != nil:
		add, err := project(ctx, lookup, objectRef{kindConfigMap, ns, s.ConfigMap.Name}, s.ConfigMap.Items, modeOr(s.ConfigMap.DefaultMode, defaultFileMode), isTrue(s.ConfigMap.Optional))
		if err != nil {
			return nil, next, err
		}
		return add, next, nil
	case s.DownwardAPI != nil:
		add, err := downward(v.pod, v.container, s.DownwardAPI.Items, modeOr(s.DownwardAPI.DefaultMode, defaultFileMode))
		if err != nil {
			return nil, next, err
		}
		return add, next, nil
	case s.Projected != nil:
		def := modeOr(s.Projected.DefaultMode, defaultFileMode)
		for i, p := range s.Projected.Sources {
			var add map[string]file
			var err error
			switch {
			case p.Secret != nil:
				add, err = project(ctx, lookup, objectRef{kindSecret, ns, p.Secret.Name}, p.Secret.Items, def, isTrue(p.Secret.Optional))
			case p.ConfigMap != nil:
				add, err = project(ctx, lookup, objectRef{kindConfigMap, ns, p.ConfigMap.Name}, p.ConfigMap.Items, def, isTrue(p.ConfigMap.Optional))
			case p.DownwardAPI != nil:
				add, err = downward(v.pod, v.container, p.DownwardAPI.Items, def)
			case p.ServiceAccountToken != nil:
				tok := v.tokens[i]
				if tok == nil || !time.Now().Before(tok.refreshAt) {
					fresh, terr := k.requestToken(ctx, v.pod, p.ServiceAccountToken)
					switch {
					case terr == nil:
						tok = fresh
						v.tokens[i] = tok
						k.cfg.Log.V(1).Info("obtained a token", "volume", v.spec.Name, "audience", p.ServiceAccountToken.Audience, "expiry", tok.expiry, "refreshAt", tok.refreshAt)
					case tok != nil && time.Now().Before(tok.expiry):
						// Kubelet serves the old token while it is
						// valid and retries.
						k.cfg.Log.Error(terr, "refreshing a token failed; keeping the current one")
						next = time.Now().Add(10 * time.Second)
					default:
						return nil, next, terr
					}
				}
				if next.IsZero() || tok.refreshAt.Before(next) {
					next = tok.refreshAt
				}
				add = map[string]file{p.ServiceAccountToken.Path: {data: tok.value, mode: def}}
			}
			if err != nil {
				return nil, next, err
			}
			if err := put(add); err != nil {
				return nil, next, err
			}
		}
		return files, next, nil
	}
	return nil, next, fmt.Errorf("volume %s: unsupported volume type", v.spec.Name)
}

func isTrue(b *bool) bool { return b != nil && *b }

// project maps an object's keys to files: all keys with mode def, or only
// items, each with its own path and mode.
func project(ctx context.Context, lookup lookupFunc, ref objectRef, items []corev1.KeyToPath, def fs.FileMode, optional bool) (map[string]file, error) {
	data, found, err := lookup(ctx, ref)
	if err != nil {
		return nil, err
	}
	out := map[string]file{}
	if !found {
		if optional {
			return out, nil
		}
		return nil, &missingError{ref: ref}
	}
	if len(items) == 0 {
		for _, key := range slices.Sorted(maps.Keys(data)) {
			out[key] = file{data: data[key], mode: def}
		}
		return out, nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, &missingError{ref: ref, key: it.Key}
		}
		out[it.Path] = file{data: d, mode: modeOr(it.Mode, def)}
	}
	return out, nil
}

// downward renders downward API items from the Pod as it was mounted.
func downward(pod *corev1.Pod, container string, items []corev1.DownwardAPIVolumeFile, def fs.FileMode) (map[string]file, error) {
	out := map[string]file{}
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = fieldValue(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := it.ResourceFieldRef.ContainerName
			if c == "" {
				c = container
			}
			val, err = resourceValue(pod, c, it.ResourceFieldRef)
		default:
			err = fmt.Errorf("downward API item %s: no fieldRef or resourceFieldRef", it.Path)
		}
		if err != nil {
			return nil, err
		}
		out[it.Path] = file{data: []byte(val), mode: modeOr(it.Mode, def)}
	}
	return out, nil
}

// fieldValue resolves a downward API fieldPath against pod, as kubelet does.
func fieldValue(pod *corev1.Pod, path string) (string, error) {
	if k, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.hostIPs":
		return joinIPs(pod.Status.HostIPs, func(ip corev1.HostIP) string { return ip.IP }), nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		return joinIPs(pod.Status.PodIPs, func(ip corev1.PodIP) string { return ip.IP }), nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported", path)
}

// joinIPs renders a Pod's address list as the downward API does: comma-separated.
func joinIPs[T any](ips []T, addr func(T) string) string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, addr(ip))
	}
	return strings.Join(out, ",")
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// formatMap renders labels or annotations as the downward API does:
// key="value" lines, sorted.
func formatMap(m map[string]string) string {
	lines := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		lines = append(lines, k+"="+strconv.Quote(m[k]))
	}
	return strings.Join(lines, "\n")
}

// resourceValue resolves a resourceFieldRef against a container's
// resources, rounding up by the divisor as kubelet does. An unset limit is
// node allocatable to kubelet; there is no node here, so it is an error.
func resourceValue(pod *corev1.Pod, container string, ref *corev1.ResourceFieldSelector) (string, error) {
	c, err := findContainer(pod, container)
	if err != nil {
		return "", err
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %q: want limits.<name> or requests.<name>", ref.Resource)
	}
	var list corev1.ResourceList
	switch kind {
	case "limits":
		list = c.Resources.Limits
	case "requests":
		list = c.Resources.Requests
	default:
		return "", fmt.Errorf("resourceFieldRef %q: want limits.<name> or requests.<name>", ref.Resource)
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %q: container %s sets none (node allocatable is unknown here)", ref.Resource, container)
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == string(corev1.ResourceCPU) {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}
