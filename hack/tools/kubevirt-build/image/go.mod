// Module image holds kvimage, which packs KubeVirt's components into docker-format
// image tarballs with go-containerregistry (hack/kubevirt/build.sh). Separate from
// the kubevirt build module so go-containerregistry's dependencies cannot move
// KubeVirt's.
module github.com/kubevirt-imds/kubevirt-imds/hack/tools/kubevirt-build/image

go 1.26.0

require github.com/google/go-containerregistry v0.22.1

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
