#!/usr/bin/env bash
# `make chart`: helm lint --strict and helm template for every ci/ values scenario, then the
# full chart and image test suite (kubernetes-validate, schema, checkov, promtool, drift).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/.tools/bin:$PATH"
CHART="$ROOT/charts/ragkeeper"
for values in "$CHART"/ci/*-values.yaml; do
    echo "== $(basename "$values")"
    helm lint --strict "$CHART" -f "$values" --namespace ragkeeper
    helm template ragkeeper "$CHART" -f "$values" --namespace ragkeeper >/dev/null
done
cd "$ROOT"
uv run --frozen python scripts/chart_values.py --check
uv run --frozen pytest tests/chart tests/images -q
