# Orchard developer tasks. `make` (or `make help`) lists the targets.

SHELL := bash
.DEFAULT_GOAL := help

CARGO ?= cargo
CARGO_TARGET_DIR ?= $(HOME)/.cache/orchard/target
# Same default as e2e/services/lib.sh; exported so up.sh/down.sh agree.
ORCHARD_SERVICES_DIR ?= $(HOME)/.cache/orchard/services
export CARGO_TARGET_DIR ORCHARD_SERVICES_DIR

.PHONY: help build-deps build run test services-up services-down

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build-deps: ## Install what the build needs beyond Rust (libpq), if missing
	bash e2e/services/build-deps.sh

build: build-deps ## Build the whole workspace
	$(CARGO) build --workspace

run: build-deps ## Run the proxy on the embedded default (SQLite, ./orchard-data, in-process cache)
	$(CARGO) run -p orchard-server --bin orchard -- serve

test: services-up ## Start backing services, then run all workspace tests
	set -o pipefail; . "$(ORCHARD_SERVICES_DIR)/env.sh" && \
	  $(CARGO) test --workspace --lib --bins --tests -- --test-threads=4 2>&1 | tee "$(ORCHARD_SERVICES_DIR)/last-test.log"
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$(ORCHARD_SERVICES_DIR)/last-test.log"

services-up: ## Install (if needed) and start Postgres, Redis Cluster, Redis, S3
	bash e2e/services/up.sh

services-down: ## Stop the backing services (keeps installed software)
	bash e2e/services/down.sh
