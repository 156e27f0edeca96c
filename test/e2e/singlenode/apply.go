package singlenode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// ApplyKustomization renders dir with `kubectl kustomize` and creates every
// object in namespace, returning them as created (after admission).
func (n *Node) ApplyKustomization(ctx context.Context, dir, namespace string) ([]*unstructured.Unstructured, error) {
	out, err := exec.CommandContext(ctx, Kubectl(), "kustomize", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("kubectl kustomize %s: %w: %s", dir, err, ee.Stderr)
		}
		return nil, fmt.Errorf("kubectl kustomize %s: %w", dir, err)
	}
	objs, err := DecodeObjects(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	for _, o := range objs {
		o.SetNamespace(namespace)
		if err := n.Client.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("creating %s %s from %s: %w", o.GetKind(), o.GetName(), dir, err)
		}
	}
	return objs, nil
}

// DecodeObjects splits a multi-document YAML stream into objects.
func DecodeObjects(stream []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decoding object %d: %w", len(objs)+1, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}
