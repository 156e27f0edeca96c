# kubevirt-imds — run `make help` for the targets.

# Tools and downloads live in tmp/ (gitignored); the envtest control plane and
# guest root trees are built into a cache outside the tree (see hack/).
LOCALBIN ?= $(CURDIR)/tmp/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
GINKGO ?= $(LOCALBIN)/ginkgo
IMG ?= kubevirt-imds:dev
# dist/install.yaml is built with the default IMG, so that `make verify` can
# regenerate it; build another image into it with `make build-installer IMG=…`.
BUNDLE_IMG ?= kubevirt-imds-bundle:dev
KUSTOMIZE ?= $(LOCALBIN)/kustomize
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
# The kustomize that kubectl v1.37 embeds: `kubectl apply -k` renders the same.
KUSTOMIZE_VERSION ?= v5.8.1
# kubectl always gets --context $(KUBE_CONTEXT), never the current context.
KIND ?= kind
KIND_CLUSTER_NAME ?= kind
KUBE_CONTEXT ?= kind-$(KIND_CLUSTER_NAME)
KUBECTL ?= kubectl
CONTAINER_TOOL ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

GO ?= go
# Every Go build here compiles as the image's build does (no cgo, trimmed
# paths), and the tool modules that build the control plane and the node pin
# the module's versions of the libraries they share with it: the Go build
# cache then compiles the Kubernetes libraries once for kube-apiserver, the
# node, the tests and the image, not once per set of flags.
export CGO_ENABLED = 0
export GOFLAGS := -trimpath $(GOFLAGS)
# The envtest control plane's directory, for KUBEBUILDER_ASSETS: a shell
# substitution, run where a recipe uses it (the envtest prerequisite has built
# it by then, so the call only prints the cached path).
ENVTEST_ASSETS = $$($(CURDIR)/hack/envtest-assets.sh)
# What `make verify` regenerates and compares with the commit.
GENERATED = api config bundle bundle.Dockerfile dist docs/api.md
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Demo

# DEMO_GUEST: namespace (real cloud-init in a network namespace) or vm (a qemu VM).
DEMO_GUEST ?= namespace

.PHONY: demo
demo: envtest ## The whole path on this machine, no cluster (root): control plane, manager, webhooks, kubelet stand-in, sidecar, a real cloud-init guest (DEMO_GUEST=vm: a qemu VM).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" KUBEVIRT_IMDS_CACHE="$(CURDIR)/tmp/cache" DEMO_GUEST="$(DEMO_GUEST)" $(GO) run ./test/e2e/demo

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests from markers.
	$(CONTROLLER_GEN) crd webhook paths="./api/..." paths="./controllers/..." paths="./webhooks/..." output:crd:artifacts:config=config/crd/bases output:webhook:artifacts:config=config/webhook
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths="./controllers/..." output:rbac:artifacts:config=config/rbac
# The RBAC markers of package webhooks are the built-in certificate mode's, granted only by its overlay.
	$(CONTROLLER_GEN) rbac:roleName=cert-rotator-role paths="./webhooks/..." output:rbac:artifacts:config=config/overlays/builtin-certs/rbac

.PHONY: generate
generate: controller-gen ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: docs
docs: ## Generate docs/api.md from the API types.
	$(GO) run ./hack/tools/apidocs -o docs/api.md ./api/v1alpha1 ./api/payload

.PHONY: bundle
bundle: manifests envtest ## Generate the OLM bundle (bundle/, bundle.Dockerfile) from config/manifests.
	cd hack/tools/bundle && $(GO) run . -root $(CURDIR) -kubectl "$(ENVTEST_ASSETS)/kubectl"

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet, also on the cluster e2e suite (build tag e2e) and the local cluster's proof (build tag cluster).
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/...
	$(GO) vet -tags cluster ./test/cluster/...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (pinned in hack/tools/lint, built from Go modules) with .golangci.yml.
	$(GOLANGCI_LINT) run ./...

# Rebuilt when the pinned version changes.
$(GOLANGCI_LINT): hack/tools/lint/go.mod hack/tools/lint/go.sum
	cd hack/tools/lint && CGO_ENABLED=0 $(GO) build -trimpath -o $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: verify
verify: generate manifests docs build-installer bundle ## Regenerate everything and fail if anything differs from what is committed.
	@gofmt_out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$gofmt_out" ]; then echo "gofmt needed: $$gofmt_out"; exit 1; fi
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		echo "generated files are stale; run 'make generate manifests docs build-installer bundle' and commit:"; \
		git status --porcelain -- $(GENERATED); git --no-pager diff --stat -- $(GENERATED); exit 1; fi
	@echo "generated files are up to date"

.PHONY: test
test: generate manifests ## Run every test (root): unit, real API server, network namespaces, real cloud-init, the end-to-end path with a qemu VM, the OLM bundle.
	@# test-deps (Debian packages, guest trees, the VM image) is mostly
	@# downloading and unpacking: it runs while vet and the builds compile.
	@# build: suites run the image's binaries; compiled here, before any
	@# spec's timeout runs, they are a link away from the build cache when a
	@# spec asks for them.
	$(MAKE) --no-print-directory test-deps & deps=$$!; \
	$(MAKE) --no-print-directory vet envtest promtool build || { wait $$deps; exit 1; }; \
	wait $$deps
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" $(GO) test ./... -count=1 -timeout 60m
	cd hack/tools/bundle && KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" $(GO) test ./... -count=1

.PHONY: test-deps
test-deps: ## Install the Debian packages and build the guest root trees and the VM image the tests use (as root; skipped otherwise).
	hack/install-test-deps.sh
	@if [ "$$(id -u)" = 0 ]; then hack/guest-rootfs.sh >/dev/null && hack/guest-vm-image.sh >/dev/null; else echo "not root: namespace and guest tests will skip"; fi

.PHONY: bench
bench: envtest ## Benchmarks: operator convergence (1,000 VMIs), manager memory among 4,000 unrelated Secrets and ConfigMaps (IMDS_BENCH_* scale it), boot storm through the webhooks (1,000 VMs), sidecar load in a Pod namespace (root), admission latency, handlers.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" $(GO) test ./controllers/ ./test/bench/ -run '^$$' -bench . -benchtime 1x -timeout 30m
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" $(GO) test ./webhooks/ -run '^$$' -bench . -benchtime 1x -benchmem -timeout 30m
	$(GO) test ./sidecar/... -run '^$$' -bench . -benchmem

##@ Build

.PHONY: build
build: ## Build the image's binaries (kubevirt-imds, kubevirt-imds-sidecar, kubevirt-imds-sidecar-netadmin) into tmp/bin.
	hack/docker-build-command.sh $(LOCALBIN)

.PHONY: kubectl-plugin
kubectl-plugin: ## Build the kubectl plugin into bin/kubectl-imds (`kubectl imds show <vm>` with bin/ on PATH).
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/kubectl-imds .

.PHONY: run
run: ## Run the manager against the cluster in KUBECONFIG.
	$(GO) run . manager

# config-with-image DIR: a copy of config/ in DIR with the manager image set
# to $(IMG), so that setting the image leaves config/manager as committed.
define config-with-image
rm -rf $(1) && mkdir -p $(1)
cp -r config $(1)/
cd $(1)/config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
endef

.PHONY: build-installer
build-installer: kustomize ## Write dist/install.yaml: config/default (cert-manager) with the image set to $(IMG).
	mkdir -p dist
	$(call config-with-image,tmp/installer)
	$(KUSTOMIZE) build tmp/installer/config/default > dist/install.yaml

##@ Deploy

# deploy installs config/$(DEPLOY_CONFIG): default needs cert-manager in the
# cluster, overlays/builtin-certs does without.
DEPLOY_CONFIG ?= default

.PHONY: deploy
deploy: kustomize ## Install the operator (config/$(DEPLOY_CONFIG), image $(IMG)) with kubectl --context $(KUBE_CONTEXT).
	$(call config-with-image,tmp/deploy)
	$(KUSTOMIZE) build tmp/deploy/config/$(DEPLOY_CONFIG) | $(KUBECTL) --context $(KUBE_CONTEXT) apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove what deploy installed, with kubectl --context $(KUBE_CONTEXT).
	$(KUSTOMIZE) build config/$(DEPLOY_CONFIG) | $(KUBECTL) --context $(KUBE_CONTEXT) delete --ignore-not-found -f -

.PHONY: docker-build-all
docker-build-all: ## Build the image $(IMG), and $(BUNDLE_IMG) when bundle.Dockerfile exists, with docker or podman.
	@if [ -z "$(CONTAINER_TOOL)" ]; then echo "docker-build-all: neither docker nor podman is installed; install one or set CONTAINER_TOOL" >&2; exit 1; fi
	$(CONTAINER_TOOL) build -t $(IMG) -f Dockerfile .
	if [ -f bundle.Dockerfile ]; then $(CONTAINER_TOOL) build -t $(BUNDLE_IMG) -f bundle.Dockerfile .; fi

.PHONY: test-e2e
test-e2e: ## Run the cluster e2e suite against the context $(KUBE_CONTEXT) (a cluster with KubeVirt, the image $(IMG) and the VM image loaded).
	KUBE_CONTEXT="$(KUBE_CONTEXT)" IMG="$(IMG)" test/e2e/run.sh

.PHONY: kind-load-all
kind-load-all: ## Load every image docker-build-all builds into the kind cluster $(KIND_CLUSTER_NAME).
	@if ! command -v $(KIND) >/dev/null; then echo "kind-load-all: $(KIND) is not installed" >&2; exit 1; fi
	$(KIND) load docker-image $(IMG) --name $(KIND_CLUSTER_NAME)
	if [ -f bundle.Dockerfile ]; then $(KIND) load docker-image $(BUNDLE_IMG) --name $(KIND_CLUSTER_NAME); fi

##@ Tools

.PHONY: envtest
envtest: ## Build the envtest control plane (kube-apiserver, etcd, kubectl) into the cache.
	hack/envtest-assets.sh >/dev/null

.PHONY: promtool
promtool: ## Build promtool (pinned in hack/tools/promtool) into the cache, for the alert rules test.
	hack/go-tool.sh promtool >/dev/null

.PHONY: test-monitoring
test-monitoring: promtool ## Test config/prometheus: `promtool test rules` on the alerts, and the dashboard's and rules' metric names against the code's.
	$(GO) test ./test/monitoring/ -count=1 -v

.PHONY: kubevirt-crds
kubevirt-crds: ## Regenerate the KubeVirt CRDs used as test data from kubevirt.io/kubevirt.
	cd hack/tools/kubevirt-crds && $(GO) run . $(CURDIR)/test/crds/kubevirt

.PHONY: kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE):
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN): hack/tools/controller-gen/go.mod hack/tools/controller-gen/go.sum
	cd hack/tools/controller-gen && $(GO) build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

##@ Local cluster

.PHONY: cluster-up
cluster-up: ## Start a real single-node Kubernetes v1.37.2 on this host as plain processes (root); kubeconfig tmp/cluster/kubeconfig, context kubevirt-imds-local.
	hack/cluster/cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and put the host back as it was before cluster-up.
	hack/cluster/cluster.sh down

.PHONY: cluster-status
cluster-status: ## Show the local cluster's processes, memory, node and Pods.
	hack/cluster/cluster.sh status

.PHONY: cluster-olm
cluster-olm: ## Install OLM v0.38.0 on the local cluster (root), rendered from its chart as its releases are; `hack/cluster/olm.sh catalog IMG` then makes a catalog holding the bundle.
	hack/cluster/olm.sh install

.PHONY: test-cluster
test-cluster: ## Prove the local cluster (root): up, a Pod from a local image, a ClusterIP from the host, a native sidecar, a clean down, up after a crash.
	$(GO) test -tags cluster ./test/cluster/ -count=1 -timeout 30m -v -ginkgo.v

.PHONY: test-e2e-cluster
test-e2e-cluster: ## The cluster e2e suite on the local cluster (root): up, real KubeVirt v1.8.0, the images, the suite, then OLM and the specs labelled olm on an OLM install, down; logs under tmp/cluster/.
	hack/cluster/e2e.sh

.PHONY: bench-cluster
bench-cluster: ## On the local cluster (root): create-to-cloud-init-done through kubevirt-imds vs KubeVirt's cloudInitNoCloud (3 VMs each, alternating), and the node's memory idle and with a VM.
	LABEL_FILTER=bench hack/cluster/e2e.sh

.PHONY: kubevirt-images
kubevirt-images: ## Build KubeVirt v1.8.0's components and images offline into the cache (root; about 14 minutes cold on two cores, seconds warm); prints the directory.
	hack/kubevirt/build.sh
