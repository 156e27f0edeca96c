# One image, three static binaries: /kubevirt-imds runs the operator
# (`manager`) and the node agent (`node-agent`); /kubevirt-imds-sidecar is the
# metadata service the webhook injects into every selected VM's Pod, a small
# program of its own that links nothing of the operator, and runs
# /kubevirt-imds-sidecar-netadmin in its place where the sidecar plumbs its
# own Pod (network-setup mode "sidecar").
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
RUN GOOS=${TARGETOS} GOARCH=${TARGETARCH} hack/docker-build-command.sh /out

FROM scratch
COPY --from=builder /out/ /
USER 65532:65532
ENTRYPOINT ["/kubevirt-imds"]
