// Package singlenode runs the whole kubevirt-imds path on one machine
// without a cluster: a real control plane (kube-apiserver and etcd) with
// KubeVirt's CRDs and the project's webhook configurations, the real manager
// binary, and stand-ins for the parts of KubeVirt and Kubernetes that would
// need a cluster — virt-controller's launcher Pod, virt-handler's VMI status
// and network plumbing (podnet), and kubelet (test/kubelet), which mounts the
// payload Secret and projected tokens and runs the injected sidecar from the
// Pod's spec. `make demo` and the hermetic end-to-end suite drive it.
//
// Functions taking a podnet.TB report failures through tb.Fatalf and release
// what they started in tb.Cleanup, so both a Ginkgo suite (GinkgoT()) and
// the demo's steps can drive them. It needs root (namespaces) and
// KUBEBUILDER_ASSETS (the envtest binaries, built by hack/envtest-assets.sh).
package singlenode
