#!/usr/bin/env bash
# `make images`: build the agent, rag and operator images with docker buildx, tagged with the
# chart's appVersion (so `helm install` of this checkout pulls exactly these images).
#   IMAGE_PREFIX=ghcr.io/me PLATFORMS=linux/amd64,linux/arm64 PUSH=1 scripts/build-images.sh
# Without PUSH the images are loaded into the local engine (host platform only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${IMAGE_PREFIX:-ghcr.io/ragkeeper}"
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/ragkeeper/Chart.yaml")"
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"

if ! command -v docker >/dev/null 2>&1; then
    echo "make images: docker is not installed; the images are built by .github/workflows/images.yml" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "make images: no Docker engine is reachable (docker info failed); nothing was built." >&2
    echo "  The Dockerfiles are linted by hadolint and checked by tests/images; CI builds them." >&2
    exit 1
fi
if ! docker buildx version >/dev/null 2>&1; then
    echo "make images: docker buildx is missing" >&2
    exit 1
fi

output=(--load)
platforms=()
if [ -n "${PUSH:-}" ]; then
    output=(--push)
    platforms=(--platform "${PLATFORMS:-linux/amd64,linux/arm64}")
fi

declare -A dockerfiles=(
    [ragkeeper-agent]=services/agent/Dockerfile
    [ragkeeper-rag]=services/rag/Dockerfile
    [ragkeeper-operator]=operator/Dockerfile
)
for image in ragkeeper-agent ragkeeper-rag ragkeeper-operator; do
    echo "== $PREFIX/$image:$VERSION"
    docker buildx build "$ROOT" -f "$ROOT/${dockerfiles[$image]}" \
        --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
        -t "$PREFIX/$image:$VERSION" "${platforms[@]}" "${output[@]}"
done
