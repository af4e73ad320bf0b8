# secretguard — see README.md. `make test` is what CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export K8S_VERSION   ?= v1.37.1
# The oldest supported Kubernetes (k8s-openapi's v1_33 feature): `make test` runs the
# version-sensitive integration tests on it too, with its own tools dir and cluster.
export K8S_OLDEST    ?= v1.33.13
export ETCD_VERSION   ?= v3.6.14
export HELM_VERSION   ?= v3.21.4
export PROMETHEUS_VERSION ?= v0.314.0
export ALERTMANAGER_VERSION ?= v0.31.1
# The release an upgrade starts from (tests/upgrade.rs): the commit before the "trust
# before features" wave, built from this repository's history into the cache.
export UPGRADE_FROM ?= daddc86

export SECRETGUARD_CACHE ?= $(HOME)/.cache/secretguard
export TOOLS_BIN := $(CURDIR)/.tools/bin
TOOLS := $(SECRETGUARD_CACHE)/tools
CARGO ?= cargo
STAGE := .ci/stage

# Integration test binaries (tests/<name>.rs) that `make integration` runs; '*' is all.
INTEGRATION_TESTS ?= *
# Those that depend on what the Kubernetes version does, run on K8S_OLDEST as well: the
# tokens controller (control_plane, token_guard, token_requests, token_not_populated), the legacy token
# cleaner, ValidatingAdmissionPolicy (control_plane), CRD schema and CEL validation,
# generic Secret guarding (and its restore delay), streamed or paged lists (caches), the
# versions the tools report (tools), and an upgrade from UPGRADE_FROM and its rollback
# (upgrade: the two versions' admission policy and lists side by side).
OLDEST_TESTS := control_plane token_guard token_requests token_not_populated legacy_token_cleaner crd_validation guard_authors secret_guard recreate caches tools upgrade
# Points tools, cluster and tests at K8S_OLDEST, away from the default .tools/bin and .cluster.
ON_OLDEST := K8S_VERSION=$(K8S_OLDEST) TOOLS_BIN=$(CURDIR)/.tools/k8s-$(K8S_OLDEST)/bin SECRETGUARD_CLUSTER_DIR=$(CURDIR)/.cluster-oldest
CARGO_INTEGRATION = $(CARGO) test --features fault-injection $(foreach t,$(INTEGRATION_TESTS),--test '$(t)')

# Build one tool into the cache; a real build (not cached yet) is timed as a stage.
build_tool = [[ -f $(TOOLS)/$(1)-$(2)/.complete ]] || $(STAGE) "build $(1) $(2)" e2e/tools/build.sh $(1) $(2)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

.PHONY: tools
tools: ## build the control plane and test tools from the Go module proxy, and the operator at UPGRADE_FROM (cached), and link them into .tools/bin
	@$(call build_tool,kubernetes,$(K8S_VERSION))
	@$(call build_tool,etcd,$(ETCD_VERSION))
	@$(call build_tool,helm,$(HELM_VERSION))
	@$(call build_tool,prometheus,$(PROMETHEUS_VERSION))
	@$(call build_tool,alertmanager,$(ALERTMANAGER_VERSION))
	@$(call build_tool,secretguard,$(UPGRADE_FROM))
	@mkdir -p $(TOOLS_BIN)
	@for b in kube-apiserver kube-controller-manager kubectl; do ln -sfn $(TOOLS)/kubernetes-$(K8S_VERSION)/bin/$$b $(TOOLS_BIN)/$$b; done
	@ln -sfn $(TOOLS)/etcd-$(ETCD_VERSION)/bin/etcd $(TOOLS_BIN)/etcd
	@ln -sfn $(TOOLS)/helm-$(HELM_VERSION)/bin/helm $(TOOLS_BIN)/helm
	@ln -sfn $(TOOLS)/prometheus-$(PROMETHEUS_VERSION)/bin/promtool $(TOOLS_BIN)/promtool
	@ln -sfn $(TOOLS)/alertmanager-$(ALERTMANAGER_VERSION)/bin/alertmanager $(TOOLS_BIN)/alertmanager
	@ln -sfn $(TOOLS)/secretguard-$(UPGRADE_FROM)/bin/secretguard $(TOOLS_BIN)/secretguard-$(UPGRADE_FROM)
	@echo "tools linked into $(TOOLS_BIN) (Kubernetes $(K8S_VERSION))"

.PHONY: tools-oldest
tools-oldest: ## the same for K8S_OLDEST (its own kube-apiserver, kube-controller-manager and kubectl) in .tools/k8s-<version>/bin
	@$(MAKE) --no-print-directory tools $(ON_OLDEST)

.PHONY: cluster
cluster: tools ## start (or reuse) the local control plane; prints KUBECONFIG=... last
	@e2e/cluster.sh up

.PHONY: cluster-down
cluster-down: ## stop the local control plane and remove its state
	@e2e/cluster.sh down

.PHONY: cluster-down-oldest
cluster-down-oldest: ## stop the K8S_OLDEST control plane and remove its state (.cluster-oldest/)
	@$(MAKE) --no-print-directory cluster-down $(ON_OLDEST)

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

.PHONY: build-tests
build-tests: ## build the integration test binaries (with fault injection)
	$(CARGO_INTEGRATION) --no-run

.PHONY: integration
integration: cluster ## integration tests against the local control plane (with fault injection); INTEGRATION_TESTS selects binaries
	$(CARGO_INTEGRATION) -- --test-threads=4

.PHONY: integration-oldest
integration-oldest: ## the version-sensitive integration tests on K8S_OLDEST, on a control plane of its own
	@$(MAKE) --no-print-directory integration $(ON_OLDEST) INTEGRATION_TESTS="$(OLDEST_TESTS)"

# One cluster at a time (two slow each other down on a small machine): each is stopped
# once its tests pass; after a failure it stays up for its logs (.ci/run stops both).
.PHONY: test
test: ## everything CI runs, each stage timed: lint, unit, tools, all integration tests on K8S_VERSION, the version-sensitive ones on K8S_OLDEST
	@if [[ -z $${STAGE_TIMES:-} ]]; then \
	  mkdir -p target; export STAGE_TIMES=$(CURDIR)/target/stage-times; rm -f "$$STAGE_TIMES"; \
	fi; \
	$(STAGE) --begin; \
	trap '$(STAGE) --summary' EXIT; \
	$(STAGE) lint $(MAKE) --no-print-directory lint; \
	$(STAGE) unit $(MAKE) --no-print-directory unit; \
	$(MAKE) --no-print-directory tools tools-oldest; \
	$(STAGE) "build integration tests" $(MAKE) --no-print-directory build-tests; \
	$(STAGE) "integration, Kubernetes $(K8S_VERSION)" $(MAKE) --no-print-directory integration; \
	$(MAKE) --no-print-directory cluster-down; \
	$(STAGE) "integration, Kubernetes $(K8S_OLDEST)" $(MAKE) --no-print-directory integration-oldest; \
	$(MAKE) --no-print-directory cluster-down-oldest

.PHONY: demo
demo: tools ## replay the outage of docs/architecture.md (Why) with the operator and Alertmanager, with a timeline
	$(CARGO) build --quiet
	@e2e/demo.sh

.PHONY: manifests
manifests: tools ## regenerate deploy/kubernetes/secretguard.yaml (plain manifests for kubectl users) from the chart
	@{ printf -- '# Generated by `make manifests` from charts/secretguard (helm template, default values).\n# Install: kubectl apply --server-side -f deploy/kubernetes/secretguard.yaml\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: secretguard-system\n'; \
	   $(TOOLS_BIN)/helm template secretguard charts/secretguard --namespace secretguard-system --kube-version 1.33.0; } > deploy/kubernetes/secretguard.yaml

.PHONY: chart-readme
chart-readme: ## regenerate charts/secretguard/README.md from the chart's values.yaml
	SECRETGUARD_WRITE_CHART_README=1 $(CARGO) test --quiet --test chart -- --exact the_chart_readme_is_generated_from_its_values

.PHONY: bench
bench: tools ## benchmarks (not in make test): writes BENCHMARKS.md and bench/results.json
	$(CARGO) build --release --bin secretguard
	@# A fresh control plane: etcd grown by earlier runs (50,000 Secrets each) writes slower.
	e2e/cluster.sh down
	e2e/cluster.sh up
	$(CARGO) bench --bench e2e
	python3 bench/report.py
