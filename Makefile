# kubevirt-imds — run `make help` for the targets.

# Tools and downloads live in tmp/ (gitignored); the envtest control plane and
# guest root trees are built into a cache outside the tree (see hack/).
LOCALBIN ?= $(CURDIR)/tmp/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GINKGO ?= $(LOCALBIN)/ginkgo
IMG ?= kubevirt-imds:dev

GO ?= go
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests from markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./api/..." paths="./controllers/..." paths="./webhooks/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac output:webhook:artifacts:config=config/webhook

.PHONY: generate
generate: controller-gen ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: verify
verify: generate manifests ## Regenerate everything and fail if anything differs from what is committed.
	@gofmt_out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$gofmt_out" ]; then echo "gofmt needed: $$gofmt_out"; exit 1; fi
	@if [ -n "$$(git status --porcelain -- api config bundle)" ]; then \
		echo "generated files are stale; run 'make generate manifests' and commit:"; \
		git status --porcelain -- api config bundle; git --no-pager diff --stat -- api config bundle; exit 1; fi
	@echo "generated files are up to date"

.PHONY: test
test: generate manifests vet envtest test-deps ## Run every test: unit, real API server, network namespaces and real cloud-init (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" $(GO) test ./... -count=1 -timeout 60m

.PHONY: test-deps
test-deps: ## Install the Debian packages and build the guest root trees the tests use (as root; skipped otherwise).
	hack/install-test-deps.sh
	@if [ "$$(id -u)" = 0 ]; then hack/guest-rootfs.sh >/dev/null; else echo "not root: namespace and guest tests will skip"; fi

.PHONY: bench
bench: envtest ## Benchmarks: operator convergence (1,000 VMIs), sidecar load in a Pod namespace (root), admission latency, handlers.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" $(GO) test ./controllers/ ./test/bench/ -run '^$$' -bench . -benchtime 1x -timeout 30m
	$(GO) test ./webhooks/ -run '^$$' -bench . -benchtime 1x -benchmem
	$(GO) test ./sidecar/... -run '^$$' -bench . -benchmem

##@ Build

.PHONY: build
build: ## Build the kubevirt-imds binary into tmp/bin.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(LOCALBIN)/kubevirt-imds .

.PHONY: run
run: ## Run the manager against the cluster in KUBECONFIG.
	$(GO) run . manager

##@ Tools

.PHONY: envtest
envtest: ## Build the envtest control plane (kube-apiserver, etcd, kubectl) into the cache.
	hack/envtest-assets.sh >/dev/null

.PHONY: kubevirt-crds
kubevirt-crds: ## Regenerate the KubeVirt CRDs used as test data from kubevirt.io/kubevirt.
	cd hack/tools/kubevirt-crds && $(GO) run . $(CURDIR)/test/crds/kubevirt

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
