#!/bin/sh
# Builds the image's static binaries into the directory $1, as the
# Dockerfile's build stage does: kubevirt-imds (the operator and the node
# agent), kubevirt-imds-sidecar (the per-VM metadata service of network-setup
# mode "node", which links nothing of the operator and none of the plumbing)
# and kubevirt-imds-sidecar-netadmin (mode "sidecar", which plumbs its own
# Pod; kubevirt-imds-sidecar runs it in its place for that mode).
set -eu
mkdir -p "$1"
CGO_ENABLED=0 exec go build -trimpath -ldflags="-s -w" -o "$1/" . ./sidecar/cmd/kubevirt-imds-sidecar ./sidecar/cmd/kubevirt-imds-sidecar-netadmin
