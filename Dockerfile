# One image, one static binary: `kubevirt-imds manager` runs the operator and
# `kubevirt-imds sidecar` the metadata service the webhook injects.
FROM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /workspace
COPY go.mod go.sum ./
RUN go mod download
# .dockerignore keeps tests, tools and generated trees out of the context.
COPY . .
# hack/docker-build-command.sh is the single source of this command; a test
# runs it too, since no container engine is available in CI.
RUN GOOS=${TARGETOS} GOARCH=${TARGETARCH} hack/docker-build-command.sh /workspace/kubevirt-imds

FROM scratch
COPY --from=builder /workspace/kubevirt-imds /kubevirt-imds
USER 65532:65532
ENTRYPOINT ["/kubevirt-imds"]
