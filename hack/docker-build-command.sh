#!/bin/sh
# Builds the static kubevirt-imds binary to $1, as the Dockerfile's build stage does.
set -eu
CGO_ENABLED=0 exec go build -trimpath -ldflags="-s -w" -o "$1" .
