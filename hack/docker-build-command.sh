#!/bin/sh
# Builds the image's two static binaries into the directory $1, as the
# Dockerfile's build stage does: kubevirt-imds (the operator and the node
# agent) and kubevirt-imds-sidecar (the per-VM metadata service, which links
# nothing of the operator).
set -eu
mkdir -p "$1"
CGO_ENABLED=0 exec go build -trimpath -ldflags="-s -w" -o "$1/" . ./sidecar/cmd/kubevirt-imds-sidecar
