# Orchard developer tasks. `make` (or `make help`) lists the targets.

SHELL := bash
.DEFAULT_GOAL := help

CARGO ?= cargo
CARGO_TARGET_DIR ?= $(HOME)/.cache/orchard/target
# Same default as e2e/services/lib.sh; exported so up.sh/down.sh agree.
ORCHARD_SERVICES_DIR ?= $(HOME)/.cache/orchard/services
export CARGO_TARGET_DIR ORCHARD_SERVICES_DIR

.PHONY: help build-deps build run programs test lint unit e2e e2e-prepare bench crds services-up services-down k8s-up k8s-down chart-lint manifests

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build-deps: ## Install what the build needs beyond Rust (libpq), if missing
	bash e2e/services/build-deps.sh

build: build-deps ## Build the whole workspace
	$(CARGO) build --workspace

run: build-deps ## Run the proxy on the embedded default (SQLite, ./orchard-data, in-process cache)
	$(CARGO) run -p orchard-server --bin orchard -- serve

ORCHARD_E2E_DIR ?= $(HOME)/.cache/orchard/e2e
export ORCHARD_E2E_DIR
TEST_LOG = $(ORCHARD_SERVICES_DIR)/last-test.log

programs: ## Install (apt-get, go install) the missing external programs of e2e/programs.tsv and check them
	python3 e2e/programs.py install --scope test

test: programs services-up k8s-up e2e-prepare ## Install and start everything, run every unit, integration and end-to-end test
	@python3 e2e/programs.py check --scope test
	@rm -f "$(TEST_LOG)"
	$(MAKE) --no-print-directory lint unit e2e
	@awk '/^test result:/ { p += $$4; f += $$6 } \
	      /^(=+ )?[0-9]+ (passed|failed|error)/ { for (i = 1; i <= NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/ || $$(i+1) ~ /^errors?/) f += $$i } } \
	      END { printf "tests: %d passed, %d failed\n", p, f }' "$(TEST_LOG)"

lint: ## Formatting and lints: cargo fmt --check, clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: ## Rust unit and integration tests (needs `make services-up`)
	set -o pipefail; . "$(ORCHARD_SERVICES_DIR)/env.sh" && \
	  $(CARGO) test --workspace --lib --bins --tests -- --test-threads=4 2>&1 | tee -a "$(TEST_LOG)"

e2e: ## End-to-end suites with real upstreams and clients (needs services-up, e2e-prepare)
	$(CARGO) build -p orchard-server --bin orchard -p orchard-operator --bin orchard-operator
	set -o pipefail; . "$(ORCHARD_SERVICES_DIR)/env.sh" && for suite in inventory pypi npm maven hostile scale deps operator chart faults; do \
	  (cd e2e/$$suite && ORCHARD_BIN="$(CARGO_TARGET_DIR)/debug/orchard" \
	    "$(ORCHARD_E2E_DIR)/venv/bin/pytest" -p no:cacheprovider -q .) 2>&1 | tee -a "$(TEST_LOG)" || exit 1; done

BENCH_ARGS ?=
BENCH_OUT = $(HOME)/.cache/orchard/last-bench.md

bench: build-deps services-up e2e-prepare ## Benchmarks: six scenarios, release build next to references, loopback (BENCH_ARGS="--seconds 3 --only 1 2")
	python3 e2e/programs.py install --scope bench
	bash e2e/bench/prepare.sh
	@python3 e2e/programs.py check --scope bench
	$(CARGO) build --release -p orchard-server --bin orchard
	set -o pipefail; . "$(ORCHARD_SERVICES_DIR)/env.sh" && cd e2e/bench && \
	  "$(ORCHARD_E2E_DIR)/venv/bin/python" run_all.py --orchard "$(CARGO_TARGET_DIR)/release/orchard" $(BENCH_ARGS) | tee "$(BENCH_OUT)"

HELM ?= $(HOME)/.cache/orchard/k8s/bin/helm

crds: ## Regenerate manifests/crd.yaml and the chart's copy from the Rust type (tests fail when they are stale)
	$(CARGO) run -q -p orchard-operator --bin crdgen > manifests/crd.yaml
	cp manifests/crd.yaml charts/orchard/files/crd.yaml

manifests: ## Regenerate manifests/install.yaml from the chart (needs helm: make k8s-up builds it)
	$(HELM) template orchard charts/orchard -n orchard -f manifests/install-values.yaml > manifests/install.yaml

chart-lint: ## helm lint the chart with the default values and every charts/orchard/ci/ file
	$(HELM) lint --strict charts/orchard
	for f in charts/orchard/ci/*.yaml; do $(HELM) lint --strict charts/orchard -f $$f || exit 1; done

e2e-prepare: ## Install the e2e tools (pypiserver, uv, pytest, Verdaccio, pnpm) and fill the PyPI, npm and Maven upstreams
	bash e2e/pypi/prepare.sh
	bash e2e/npm/prepare.sh
	bash e2e/maven/prepare.sh

services-up: ## Install (if needed) and start Postgres, Redis Cluster, Redis, S3
	bash e2e/services/up.sh

services-down: ## Stop the backing services (keeps installed software)
	bash e2e/services/down.sh

k8s-up: ## Build (cached, cold ~13 min) and start a local Kubernetes API server (etcd + kube-apiserver on 127.0.0.1)
	bash e2e/k8s/build.sh
	bash e2e/k8s/up.sh

k8s-down: ## Stop the local Kubernetes API server (keeps binaries and state; e2e/k8s/down.sh --wipe forgets the state)
	bash e2e/k8s/down.sh
