#!/usr/bin/env bash
# Extra `make lint` checks for the deployment files: Dockerfiles (hadolint), workflows and
# Dependabot config (check-jsonschema, offline built-in schemas), and the generated chart
# schema/values tables (scripts/chart_values.py --check).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV_RUN=(uv run --frozen)
"${UV_RUN[@]}" hadolint services/agent/Dockerfile services/rag/Dockerfile operator/Dockerfile
"${UV_RUN[@]}" check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
"${UV_RUN[@]}" check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
"${UV_RUN[@]}" yamllint -d "{extends: relaxed, rules: {line-length: {max: 140}}}" \
    .github charts/ragkeeper/values.yaml charts/ragkeeper/ci charts/ragkeeper/Chart.yaml
"${UV_RUN[@]}" python scripts/chart_values.py --check
