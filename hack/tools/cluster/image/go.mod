// Module image builds the local cluster's images without a registry or a
// container engine: the pause binary, a tiny HTTP test server, and imgpack,
// which packs a static binary into a docker-format image tarball with
// go-containerregistry for `ctr images import`. Separate from the node-binaries
// module so that go-containerregistry's dependencies cannot move Kubernetes'.
module github.com/kubevirt-imds/kubevirt-imds/hack/tools/cluster/image

go 1.26.0

require github.com/google/go-containerregistry v0.22.1

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
