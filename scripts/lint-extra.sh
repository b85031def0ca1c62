#!/usr/bin/env bash
# Extra `make lint` checks for the deployment files: Dockerfiles (hadolint), workflows and
# Dependabot config (check-jsonschema, offline built-in schemas), and the generated chart
# schema/values tables (scripts/chart_values.py --check); and ESLint (eslint.config.js) over
# the chat page's own JavaScript, installed on first use by `scripts/install-tools.sh eslint`
# (Debian's nodejs/npm if missing, then `npm ci` from package-lock.json into node_modules/);
# and secret scanning (detect-secrets over every tracked file against .secrets.baseline,
# scripts/secret-scan.sh).
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
bash scripts/install-tools.sh eslint
node_modules/.bin/eslint --max-warnings 0 services/agent/src/ragkeeper_agent/static/js
bash scripts/secret-scan.sh
