# secretguard — see README.md. `make test` is what CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export K8S_VERSION   ?= v1.37.1
export ETCD_VERSION   ?= v3.6.14
export HELM_VERSION   ?= v3.21.4
export PROMETHEUS_VERSION ?= v0.314.0
export ALERTMANAGER_VERSION ?= v0.31.1

export SECRETGUARD_CACHE ?= $(HOME)/.cache/secretguard
export TOOLS_BIN := $(CURDIR)/.tools/bin
TOOLS := $(SECRETGUARD_CACHE)/tools
CARGO ?= cargo

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

.PHONY: tools
tools: ## build the control plane and test tools from the Go module proxy (cached) and link them into .tools/bin
	@e2e/tools/build.sh kubernetes $(K8S_VERSION)
	@e2e/tools/build.sh etcd $(ETCD_VERSION)
	@e2e/tools/build.sh helm $(HELM_VERSION)
	@e2e/tools/build.sh prometheus $(PROMETHEUS_VERSION)
	@e2e/tools/build.sh alertmanager $(ALERTMANAGER_VERSION)
	@mkdir -p $(TOOLS_BIN)
	@for b in kube-apiserver kube-controller-manager kubectl; do ln -sfn $(TOOLS)/kubernetes-$(K8S_VERSION)/bin/$$b $(TOOLS_BIN)/$$b; done
	@ln -sfn $(TOOLS)/etcd-$(ETCD_VERSION)/bin/etcd $(TOOLS_BIN)/etcd
	@ln -sfn $(TOOLS)/helm-$(HELM_VERSION)/bin/helm $(TOOLS_BIN)/helm
	@ln -sfn $(TOOLS)/prometheus-$(PROMETHEUS_VERSION)/bin/promtool $(TOOLS_BIN)/promtool
	@ln -sfn $(TOOLS)/alertmanager-$(ALERTMANAGER_VERSION)/bin/alertmanager $(TOOLS_BIN)/alertmanager
	@echo "tools linked into $(TOOLS_BIN) (Kubernetes $(K8S_VERSION))"

.PHONY: cluster
cluster: tools ## start (or reuse) the local control plane; prints KUBECONFIG=... last
	@e2e/cluster.sh up

.PHONY: cluster-down
cluster-down: ## stop the local control plane and remove its state
	@e2e/cluster.sh down

.PHONY: build
build: ## build the operator
	$(CARGO) build --all-targets

.PHONY: crds
crds: ## regenerate crds/ from the Rust types
	$(CARGO) run --quiet -- crd > crds/secretguard.dev_secretguards.yaml

.PHONY: lint
lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features fault-injection -- -D warnings

.PHONY: unit
unit: ## unit tests (no cluster)
	$(CARGO) test --lib --bins

.PHONY: integration
integration: cluster ## integration tests against the local control plane (with fault injection)
	$(CARGO) test --features fault-injection --test '*' -- --test-threads=4

.PHONY: test
test: ## everything CI runs: lint, unit tests, tools, cluster, integration tests
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory lint unit integration; \
	echo "make test: passed in $$(( $$(date +%s) - start ))s"

.PHONY: demo
demo: cluster build ## replay a token deletion on the local control plane with a timeline
	@e2e/demo.sh
